"""ItemEncoder on the real default model (CPU): unit length, determinism, order, batching, OOM halving."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.random_models import random_model, random_tokens  # noqa: E402
from gpuclust.backend import cpu_backend, from_torch  # noqa: E402
from gpuclust.errors import UsageError  # noqa: E402
from gpuclust.features.text.batching import (  # noqa: E402
    TokenizedTexts,
    token_budget_batches,
)
from gpuclust.features.text.encoder import ItemEncoder, resolve_precision  # noqa: E402
from gpuclust.features.text.model import load_encoder  # noqa: E402

TEXTS = [
    "red wool scarf",
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "stainless steel saucepan with a glass lid and a long handle, dishwasher safe",
    "mug",
    "set of 3 cake tins pantry design",
    "blue wool scarf",
    "a very long description " * 12,
    "jumbo bag red retrospot",
]


@pytest.fixture(scope="module")
def model():
    return load_encoder("default", device="cpu")



def fixed_size_batches(n: int, batch_size: int):
    """Unsorted row-count batches: the naive plan sorted token budgets are measured against."""
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))


def padded_tokens(batches, lengths: np.ndarray, multiple_of: int = 1) -> int:
    """Total tokens a plan feeds the model, padding included."""
    total = 0
    for b in batches:
        width = int(lengths[b].max())
        if multiple_of > 1:
            width = -(-width // multiple_of) * multiple_of
        total += width * len(b)
    return total

def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_vectors_are_unit_length_float32(model):
    enc = ItemEncoder(model, batch_tokens=64)
    v = enc.encode(TEXTS)
    assert v.dtype == torch.float32 and tuple(v.shape) == (len(TEXTS), 384)
    np.testing.assert_allclose(v.norm(dim=1).numpy(), 1.0, atol=1e-5)
    s = enc.stats_
    assert s.items == len(TEXTS) and s.batches > 1
    assert 0 < s.non_pad_tokens <= s.tokens and 0 <= s.padding_share < 1
    assert s.seconds > 0 and s.items_per_s > 0 and s.tokens_per_s > 0


def test_deterministic_across_runs(model):
    a = ItemEncoder(model).encode(TEXTS)
    b = ItemEncoder(model).encode(TEXTS)
    assert torch.equal(a, b)


def test_order_preserved_under_length_sorting(model):
    enc = ItemEncoder(model, batch_tokens=48)  # several sorted batches
    together = enc.encode(TEXTS).numpy()
    alone = np.stack([ItemEncoder(model).encode([t])[0].numpy() for t in TEXTS])
    assert cosine(together, alone).min() >= 0.999
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = enc.encode([TEXTS[i] for i in perm]).numpy()
    assert cosine(shuffled, together[perm]).min() >= 0.999


def test_unsorted_fixed_batches_give_the_same_vectors(model):
    sorted_v = ItemEncoder(model).encode(TEXTS).numpy()
    fixed = ItemEncoder(model, sort_by_length=False, batch_size=3).encode(TEXTS).numpy()
    assert cosine(sorted_v, fixed).min() >= 0.999


def test_cls_pooling_differs_from_mean_and_is_normalised(model):
    mean = ItemEncoder(model, pooling="mean").encode(TEXTS[:3])
    cls = ItemEncoder(model, pooling="cls").encode(TEXTS[:3])
    np.testing.assert_allclose(cls.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert not torch.allclose(mean, cls)


def test_cpu_bf16_agrees_with_fp32(model):
    fp32 = ItemEncoder(model, precision="fp32").encode(TEXTS[:4]).numpy()
    bf16_enc = ItemEncoder(model, precision="bf16")
    bf16 = bf16_enc.encode(TEXTS[:4]).numpy()
    assert bf16_enc.precision_ == "bf16"
    assert cosine(fp32, bf16).min() >= 0.99


def test_bad_parameters_are_usage_errors(model):
    with pytest.raises(UsageError, match="pooling"):
        ItemEncoder(model, pooling="max").encode(["x"])
    with pytest.raises(UsageError, match="fp16"):
        ItemEncoder(model, precision="fp16").encode(["x"])
    with pytest.raises(UsageError, match="precision"):
        resolve_precision("int4", "cpu")
    assert resolve_precision("auto", "cpu") == "fp32"


def test_token_budget_batches_cut_padding():
    lengths = np.array([5, 40, 6, 38, 7, 41, 5, 39, 6, 40], dtype=np.int64)
    sorted_plan = list(token_budget_batches(lengths, batch_tokens=100))
    assert sorted(np.concatenate(sorted_plan).tolist()) == list(range(len(lengths)))
    for b in sorted_plan:
        assert len(b) * lengths[b].max() <= 100 or len(b) == 1
    fixed_plan = list(fixed_size_batches(len(lengths), 2))
    assert padded_tokens(sorted_plan, lengths) < padded_tokens(fixed_plan, lengths)
    assert padded_tokens(list(token_budget_batches(lengths, 100, multiple_of=8)), lengths, 8) % 8 == 0


def test_padding_matches_sequences():
    tok = TokenizedTexts.from_lists([[101, 7, 102], [101, 102], [101, 5, 6, 7, 102]], pad_id=0,
                                    input_names=("input_ids", "token_type_ids", "attention_mask"))
    arrays = tok.pad(np.array([2, 0]), multiple_of=8)
    assert arrays["input_ids"].shape == (2, 8)
    assert arrays["input_ids"][1, :4].tolist() == [101, 7, 102, 0]
    assert arrays["attention_mask"].sum(1).tolist() == [5, 3]
    assert "token_type_ids" in arrays
    assert tok.subset(np.array([1])).ids.tolist() == [101, 102]


class _OOMAbove:
    """Wraps a model: any batch of more than `limit` rows raises CUDA's out-of-memory error."""

    def __init__(self, model, limit: int) -> None:
        self.inner, self.limit, self.calls = model, limit, []
        self.config = model.config

    def __call__(self, **inputs):
        rows = inputs["input_ids"].shape[0]
        self.calls.append(rows)
        if rows > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated")  # the name every torch >= 2.3 has
        return self.inner(**inputs)

    def parameters(self):
        return self.inner.parameters()


@pytest.mark.parametrize("torch_release", ["current", "2.3"])
def test_out_of_memory_halves_the_batch_and_keeps_results(torch_release, monkeypatch):
    if torch_release == "2.3":  # torch.OutOfMemoryError appeared in 2.5; pyproject allows 2.3
        monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    loaded = random_model("tiny", seed=1)
    tokens = random_tokens(40, min_len=4, max_len=12, vocab_size=1000, seed=2)
    reference = ItemEncoder(loaded, batch_tokens=10_000).encode_tokens(tokens)
    loaded.model = _OOMAbove(loaded.model, limit=5)
    enc = ItemEncoder(loaded, batch_tokens=10_000)
    out = enc.encode_tokens(tokens)
    calls = loaded.model.calls
    assert calls[:4] == [40, 20, 10, 5]  # halved down to what fits
    assert enc.stats_.oom_retries == sum(c > 5 for c in calls)
    assert enc.stats_.batches == sum(c <= 5 for c in calls)
    assert torch.allclose(out, reference, atol=1e-5)
    loaded.model.limit = 0
    with pytest.raises(UsageError, match="single sequence"):
        ItemEncoder(loaded, batch_tokens=10_000).encode_tokens(tokens)


def test_dlpack_torch_to_numpy_shares_memory():
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    array = from_torch(tensor, cpu_backend())
    assert isinstance(array, np.ndarray)
    assert array.__array_interface__["data"][0] == tensor.data_ptr()
    tensor[0, 0] = 42.0
    assert array[0, 0] == 42.0


@pytest.mark.gpu
def test_dlpack_cuda_to_cupy_shares_memory():
    from gpuclust.backend import cuda_backend

    tensor = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    array = from_torch(tensor, cuda_backend())
    assert type(array).__module__.startswith("cupy")
    assert array.data.ptr == tensor.data_ptr()
    tensor[0, 0] = 42.0
    torch.cuda.synchronize()
    assert float(array[0, 0]) == 42.0


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_reduced_precision_agrees_with_fp32(precision):
    loaded = random_model("minilm-l6", seed=0, device="cuda")
    tokens = random_tokens(512, seed=1)
    fp32 = ItemEncoder(loaded, precision="fp32").encode_tokens(tokens)
    low = ItemEncoder(loaded, precision=precision).encode_tokens(tokens)
    assert float(torch.nn.functional.cosine_similarity(fp32, low, dim=1).min()) >= 0.99


def test_unpadded_batches_need_no_mask_and_give_the_same_vectors():
    """The GPU's default plan (`unpadded`, here forced on the CPU): sorted batches end where the length
    changes, so they carry no padding and no attention mask; the vectors are those of padded batches."""
    loaded = random_model("tiny", seed=0)
    tokens = random_tokens(1500, min_len=4, max_len=9, vocab_size=loaded.model.config.vocab_size, seed=3)
    padded = ItemEncoder(loaded, precision="fp32", batch_tokens=1024, unpadded=False)
    unpadded = ItemEncoder(loaded, precision="fp32", batch_tokens=1024, unpadded=True)
    a, b = padded.encode_tokens(tokens), unpadded.encode_tokens(tokens)
    assert float(cosine(a.numpy(), b.numpy()).min()) > 0.99999
    assert padded.stats_.padding_share > 0.02 and padded.stats_.unpadded_batches < padded.stats_.batches
    assert unpadded.stats_.padding_share < padded.stats_.padding_share
    # a short remainder of one length is padded into the next batch rather than run on its own
    assert unpadded.stats_.unpadded_batches >= unpadded.stats_.batches - 2 > padded.stats_.unpadded_batches
    # a rare length is padded into its neighbours' batch rather than run as a batch of its own
    odd = TokenizedTexts.from_lists([[1] * 9] + [[1] * 5] * 400)
    from gpuclust.features.text.batching import length_order, next_batch

    order = length_order(odd.lengths)
    assert len(next_batch(order, odd.lengths, 0, 1024, uniform=True)) > 1
