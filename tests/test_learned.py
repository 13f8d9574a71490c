"""The learned featurisers (sequence encoder, Mult-DAE/VAE) and their shared training loop."""

import numpy as np
import pandas as pd
import pytest

from gpuclust import UserClusterer
from gpuclust.backend import cpu_backend
from gpuclust.config import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.features.learned.autoencoder import AutoencoderFeaturizer
from gpuclust.features.learned.sequence import SequenceFeaturizer
from gpuclust.features.learned.sequences import TokenBatcher, build_sequences
from gpuclust.features.learned.training import Trainer, capped
from gpuclust.preprocess.clean import Preprocessor
from gpuclust.synth import SynthSpec, generate


@pytest.fixture(scope="module")
def small():
    return generate(SynthSpec(n_users=300, n_items=120, n_groups=3, seed=0, events_per_user=20))


@pytest.fixture(scope="module")
def prepared(small):
    return Preprocessor().run(small.events, cpu_backend(), small.items)


def test_sequences_are_time_ordered_and_keep_the_last_events(prepared):
    seq = build_sequences(prepared, cpu_backend(), list(prepared.event_types), max_length=5, device="cpu")
    counts = prepared.events.groupby("user_idx").size().to_numpy()
    assert np.array_equal(seq.host_lengths, np.minimum(counts, 5))
    user = 7
    expected = prepared.events[prepared.events.user_idx == user].sort_values("timestamp", kind="stable")
    start = int(seq.offsets[user])
    got = seq.items[start:start + seq.host_lengths[user]].numpy() - 1
    assert list(got) == list(expected.item_idx.to_numpy()[-5:])
    assert int(seq.gaps[start]) >= 1 and seq.kinds.min() >= 1


def test_token_batches_respect_the_budget_and_cover_every_user():
    lengths = np.random.default_rng(0).integers(1, 60, 500)
    batches = TokenBatcher(lengths, budget=400, max_rows=64, seed=0).plan()
    rows = np.concatenate([b.rows for b in batches])
    assert sorted(rows) == list(range(500))
    assert all(len(b.rows) * lengths[b.rows].max() <= 400 and len(b.rows) <= 64 for b in batches)
    assert all(b.width == lengths[b.rows].max() for b in batches)


@pytest.mark.parametrize("cell", ["gru", "lstm", "transformer"])
def test_each_cell_trains_and_gives_unit_float32_vectors(prepared, cell):
    lines = []
    f = SequenceFeaturizer(cell=cell, epochs=2, seed=0, progress=lines.append)
    x = f.fit_transform(prepared, cpu_backend())
    assert x.shape == (prepared.n_users, f.info_["dims"]) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    training = f.info_["training"]
    assert training["epochs_run"] == 2 and training["train_seconds"] > 0 and training["final_train_loss"] > 0
    assert training["best_val_loss"] is not None and 0 <= training["best_val_hr10"] <= 1
    assert any("epoch 2/2" in line and "loss" in line and "val loss" in line for line in lines)


def test_same_seed_same_vectors_and_mean_pooling_differs(prepared):
    b = cpu_backend()
    one = SequenceFeaturizer(epochs=1, seed=3).fit_transform(prepared, b)
    two = SequenceFeaturizer(epochs=1, seed=3).fit_transform(prepared, b)
    mean = SequenceFeaturizer(epochs=1, seed=3, pooling="mean").fit_transform(prepared, b)
    assert np.array_equal(one, two)
    assert not np.allclose(one, mean)


def test_sampled_softmax_and_horizon_run(prepared):
    f = SequenceFeaturizer(epochs=1, negatives=16, horizon=4, seed=0)
    x = f.fit_transform(prepared, cpu_backend())
    assert f.info_["negatives"] == 16 and np.isfinite(x).all()


@pytest.mark.parametrize("kind", ["dae", "vae"])
def test_autoencoder_trains_on_sparse_rows(prepared, kind):
    f = AutoencoderFeaturizer(kind=kind, epochs=3, seed=0)
    x = f.fit_transform(prepared, cpu_backend())
    assert x.shape == (prepared.n_users, f.info_["dims"]) and x.dtype == np.float32
    assert f.info_["training"]["epochs_run"] == 3 and f.info_["validation_users"] > 0
    sampled = AutoencoderFeaturizer(kind=kind, epochs=1, negatives=8, seed=0).fit_transform(prepared, cpu_backend())
    assert np.isfinite(sampled).all()


def test_max_steps_cuts_both_learned_featurisers_alike(prepared):
    assert capped(list, 9, 3, None) == (list, 9)
    plan, epochs = capped(lambda: list(range(10)), 9, 10, 4)
    assert plan() == [0, 1, 2, 3] and epochs == 1
    assert capped(lambda: list(range(3)), 9, 3, 7)[1] == 3 and capped(list, 2, 3, 70)[1] == 2
    for f, whole in ((SequenceFeaturizer(epochs=4, max_steps=2, batch_tokens=256, seed=0), prepared.n_events),
                     (AutoencoderFeaturizer(epochs=4, max_steps=2, batch_users=32, seed=0), prepared.n_users)):
        f.fit_transform(prepared, cpu_backend())
        training = f.info_["training"]
        assert f.info_["steps_per_epoch"] > 2 and training["epochs_max"] == training["epochs_run"] == 1, f.name
        assert 0 < training["history"][0]["units"] < whole / 2, f.name  # two batches, not the whole epoch


@pytest.mark.parametrize("features", [("sequence",), ("autoencoder",), ("behaviour", "sequence")])
def test_saved_model_encodes_new_users_with_the_trained_weights(small, tmp_path, features):
    cfg = PipelineConfig(device="cpu")
    section = cfg.features.sequence if "sequence" in features else cfg.features.autoencoder
    section.epochs = 2
    model = UserClusterer(3, features=features, config=cfg).fit(small.events, small.items)
    model.save(tmp_path / "m")
    arrays = __import__("safetensors.numpy", fromlist=["load_file"]).load_file(str(tmp_path / "m" / "arrays.safetensors"))
    assert any(k.startswith(f"featurizer.{features[-1]}.weights.") for k in arrays)
    loaded = UserClusterer.load(tmp_path / "m")
    some = small.events[small.events.user_id.isin(small.events.user_id.unique()[:40])]
    pd.testing.assert_frame_equal(model.predict(some), loaded.predict(some))
    assert (model.predict(small.events)["cluster"] == model.labels_["cluster"]).all()
    block = model.manifest_["features"]["blocks"][features[-1]]
    assert block["training"]["train_seconds"] > 0 and block["training"]["final_train_loss"] is not None


def test_tampered_weights_are_refused_with_a_clear_error(small, tmp_path):
    from gpuclust.features.learned.weights import load_module_arrays

    f = SequenceFeaturizer(epochs=1, seed=0)
    f.fit_transform(Preprocessor().run(small.events, cpu_backend(), small.items), cpu_backend())
    meta, arrays = f.state()
    arrays = {k: v.numpy() for k, v in arrays.items()}
    arrays.pop(next(iter(arrays)))
    with pytest.raises(ValueError, match="do not fit"):
        SequenceFeaturizer.from_state(meta, arrays, cpu_backend())
    assert callable(load_module_arrays)


class _Toy:
    """A one-parameter model whose 'batches' are row lists; OOM above `limit` rows."""

    def __init__(self, limit: int):
        import torch

        self.net = torch.nn.Linear(1, 1)
        self.limit = limit
        self.sizes = []

    class B:
        def __init__(self, rows):
            self.rows = rows

        def halves(self):
            m = len(self.rows) // 2
            return [_Toy.B(self.rows[:m]), _Toy.B(self.rows[m:])]

    def loss_of(self, batch):
        import torch

        self.sizes.append(len(batch.rows))
        if len(batch.rows) > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated")
        x = torch.ones(len(batch.rows), 1)
        return (self.net(x) ** 2).sum(), len(batch.rows)


def test_out_of_memory_splits_the_batch_and_shrinks_the_plan():
    toy = _Toy(limit=4)
    shrunk = []
    trainer = Trainer("toy", toy.net, learning_rate=0.01, epochs=1, patience=0, precision="fp32", device="cpu")
    report = trainer.fit(lambda: [_Toy.B(list(range(16)))], toy.loss_of, lambda b: len(b.rows),
                         shrink=lambda: shrunk.append(1), split=lambda b: b.halves())
    assert report.oom_retries == 2 and len(shrunk) == 2
    assert toy.sizes[-4:] == [4, 4, 4, 4]


def test_out_of_memory_on_one_row_is_a_usage_error():
    toy = _Toy(limit=0)
    trainer = Trainer("toy", toy.net, learning_rate=0.01, epochs=1, patience=0, precision="fp32", device="cpu")
    with pytest.raises(UsageError, match="out of GPU memory"):
        trainer.fit(lambda: [_Toy.B([0])], toy.loss_of, lambda b: 1, split=lambda b: b.halves())


def test_early_stopping_restores_the_best_epoch():
    import torch

    toy = _Toy(limit=100)
    losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.1])
    snapshots = []

    def validate():
        snapshots.append(toy.net.weight.detach().clone())
        return {"loss": next(losses), "hr10": 0.0}

    trainer = Trainer("toy", toy.net, learning_rate=0.1, epochs=6, patience=2, precision="fp32", device="cpu")
    report = trainer.fit(lambda: [_Toy.B([0, 1])], toy.loss_of, lambda b: 2, validate)
    assert report.stopped_early and report.epochs_run == 5 and report.best_epoch == 2
    assert torch.equal(toy.net.weight, snapshots[1])


@pytest.mark.parametrize("section, value, message", [
    ("cell", "rnn", "--sequence-cell"), ("pooling", "max", "--sequence-pooling"), ("item_init", "bert", "--item-init"),
    ("dim", 0, "--sequence-dim"), ("dropout", 1.5, "dropout"), ("validation_share", 0.9, "validation_share"),
])
def test_bad_sequence_settings_are_named(section, value, message):
    cfg = PipelineConfig()
    cfg.features.features = ("sequence",)
    setattr(cfg.features.sequence, section, value)
    with pytest.raises(UsageError, match=message):
        cfg.validate()


@pytest.mark.parametrize("toml, message", [
    ('[features.sequence]\ndim = 1000000000', r"--sequence-dim \(features.sequence.dim\) must be at most 4096"),
    ('[features.sequence]\nlayers = 100000', r"features.sequence.layers must be at most 16"),
    ('[features.sequence]\ncell = "transformer"\nmax_length = 1000000000',
     r"features.sequence.max_length must be at most 2048 with --sequence-cell transformer"),
    ('[features.sequence]\ncell = "transformer"\ndim = 100', r"--sequence-dim .* such as 96"),
    ('[features.autoencoder]\ndim = 1000000000', r"--autoencoder-dim .* must be at most 4096"),
    ('[features.autoencoder]\nhidden = 1000000000', r"features.autoencoder.hidden must be at most 4096"),
    ('[features.sequence]\nepochs = 1000000000\npatience = 1000000000',
     r"--sequence-epochs \(features.sequence.epochs\) must be at most 10000"),
    ('[features.autoencoder]\nepochs = 1000000000', r"--autoencoder-epochs .* must be at most 10000"),
    ('[features.autoencoder]\nbeta = 1e300', r"features.autoencoder.beta must be a number at least 0 and at most"),
])
def test_learned_sizes_beyond_memory_are_refused_before_any_data_is_read(tmp_path, toml, message):
    """These allocated terabytes (a traceback) or built layers for hours instead of one clear line."""
    path = tmp_path / "run.toml"
    path.write_text('[features]\nfeatures = ["sequence", "autoencoder"]\n' + toml + "\n")
    with pytest.raises(UsageError, match=message):
        PipelineConfig.from_toml(path).validate()


def test_large_but_possible_learned_sizes_pass_validation():
    cfg = PipelineConfig()
    cfg.features.features = ("sequence",)
    cfg.features.sequence.max_length = 10**9  # a recurrent cell keeps whole histories: fine
    cfg.features.sequence.dim = 4096
    cfg.validate()
    cfg.features.sequence.cell, cfg.features.sequence.max_length, cfg.features.sequence.dim = "transformer", 2048, 48
    cfg.validate()  # 48 < 64: one head


@pytest.mark.parametrize("featurizer", [SequenceFeaturizer, AutoencoderFeaturizer])
def test_fp16_on_the_cpu_names_the_setting_and_choices_the_learned_features_accept(prepared, featurizer):
    """The advice was the text encoder's: 'choose fp32, bf16 or int8', and int8 is no learned precision."""
    with pytest.raises(UsageError, match=r"features.(sequence|autoencoder).precision 'fp16' needs a CUDA device; on "
                                         r"the CPU choose fp32, bf16 or auto") as err:
        featurizer(precision="fp16", epochs=1, seed=0).fit_transform(prepared, cpu_backend())
    assert "int8" not in str(err.value)


def test_learned_settings_without_their_feature_have_no_effect():
    cfg = PipelineConfig()
    cfg.features.autoencoder.kind = "vae"
    with pytest.raises(UsageError, match="--autoencoder .*no effect without 'autoencoder'"):
        cfg.validate()
    cfg = PipelineConfig()
    cfg.features.features = ("sequence",)
    cfg.features.sequence.item_init = "text"
    cfg.features.text.model = "some/model"  # feeds the item init: not dead
    cfg.validate()


def test_sequence_separates_personas_that_bags_of_items_cannot():
    """Sequential personas come in pairs with the same item mix and opposite routes: TF-IDF finds the
    pairs, not the personas; the sequence encoder finds the personas. The margin is fixed from measured
    runs (benchmarks/results/learned-cpu.md): sequence ARI exceeds TF-IDF ARI by at least MARGIN."""
    MARGIN = 0.05
    data = generate(SynthSpec(n_users=1000, n_items=120, n_groups=4, seed=0, events_per_user=60, sequential=True))
    cfg = PipelineConfig(device="cpu", seed=0)
    cfg.features.sequence.cell = "transformer"
    cfg.features.sequence.pooling = "mean"
    cfg.features.sequence.epochs = 10
    cfg.features.sequence.validation_share = 0.0
    seq = UserClusterer(4, features=("sequence",), config=cfg).fit(data.events, data.items, data.truth)
    bag = UserClusterer(4, features=("tfidf",), device="cpu", seed=0).fit(data.events, data.items, data.truth)
    assert seq.metrics_["ari"] > bag.metrics_["ari"] + MARGIN, (seq.metrics_["ari"], bag.metrics_["ari"])


def test_item_embeddings_can_start_from_the_text_encoders_item_vectors(small):
    def encoder(texts):  # any callable texts -> vectors stands in for the transformer
        rng = np.random.default_rng(len(texts))
        return rng.standard_normal((len(texts), 48)).astype(np.float32)

    cfg = PipelineConfig(device="cpu")
    cfg.features.sequence.item_init = "text"
    cfg.features.sequence.epochs = 1
    model = UserClusterer(3, features=("sequence",), config=cfg, embedding_model=encoder).fit(small.events, small.items)
    assert model.manifest_["features"]["blocks"]["sequence"]["item_init"] == "text"
    with pytest.raises(UsageError, match="item_init 'text' needs"):
        SequenceFeaturizer(item_init="text").fit_transform(Preprocessor().run(small.events, cpu_backend()), cpu_backend())


# --- the GPU paths' CPU twins: chunked softmax, SDPA Transformer, token budgets, weight 0 -------------

def _heads(seed=0, n=37, items=101, d=16):
    import torch

    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, requires_grad=True)
    weight = (torch.randn(items, d, generator=g) * 0.5).requires_grad_()
    bias = (torch.randn(items, generator=g) * 0.1).requires_grad_()
    return h, weight, bias, g


def _grads(loss, *tensors):
    import torch

    return torch.autograd.grad(loss, tensors)


def test_chunked_cross_entropy_equals_the_full_softmax_in_loss_and_gradients():
    """The chunked path (item chunks of 7 here) is what every GPU step runs beyond the logit budget."""
    import torch

    from gpuclust.features.learned.softmax import next_item_loss

    h, weight, bias, g = _heads()
    targets = torch.randint(1, weight.shape[0], (h.shape[0],), generator=g)
    full = next_item_loss(h, targets, weight, bias, None, None, None)
    chunked = next_item_loss(h, targets, weight, bias, None, None, None, max_cells=h.shape[0] * 7)
    assert torch.allclose(full, chunked, rtol=1e-5, atol=1e-5)
    grads = _grads(chunked, h, weight, bias)
    for a, b in zip(_grads(full, h, weight, bias), grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert float(grads[1][0].abs().sum()) == 0.0 and float(grads[2][0]) == 0.0  # padding is never a class


def test_chunked_multinomial_loss_equals_the_full_softmax_in_loss_and_gradients():
    import torch

    from gpuclust.features.learned.softmax import multinomial_loss

    h, weight, bias, g = _heads(1, n=12, items=53)
    rows = torch.repeat_interleave(torch.arange(12), 4)
    cols = torch.randint(0, 53, (48,), generator=g)
    values = torch.rand(48, generator=g)
    full = multinomial_loss(h, rows, cols, values, weight, bias, None, None, None)
    chunked = multinomial_loss(h, rows, cols, values, weight, bias, None, None, None, max_cells=12 * 10)
    assert torch.allclose(full, chunked, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(full, h, weight, bias), _grads(chunked, h, weight, bias), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_cross_entropy_under_bf16_autocast_agrees_with_fp32():
    import torch

    from gpuclust.features.learned.softmax import next_item_loss

    h, weight, bias, g = _heads(2, n=64, items=300, d=32)
    targets = torch.randint(1, 300, (64,), generator=g)
    reference = next_item_loss(h, targets, weight, bias, None, None, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = next_item_loss(h, targets, weight, bias, None, None, None, max_cells=64 * 50)
    assert low.dtype == torch.float32 and abs(float(low.detach()) / float(reference.detach()) - 1) < 1e-2
    gh_ref, gw_ref = _grads(reference, h, weight)
    gh, gw = _grads(low, h, weight)
    cos = torch.nn.functional.cosine_similarity(gh.flatten(), gh_ref.flatten(), dim=0)
    assert gh.dtype == gw.dtype == torch.float32 and float(cos) > 0.99
    assert float(torch.nn.functional.cosine_similarity(gw.flatten(), gw_ref.flatten(), dim=0)) > 0.99


def test_gpu_steps_reach_their_token_budget_while_the_cpu_keeps_its_batches():
    from gpuclust.features.learned import defaults

    n_tokens = 40_000_000  # 1M users x 40 events at 20k items: 2.6G logits a step, chunked
    assert defaults.batch_tokens("cuda", 20_001, n_tokens) == defaults.GPU_BATCH_TOKENS
    assert defaults.batch_tokens("cuda", 20_001, 4_000_000) == 4_000_000 // defaults.MIN_STEPS_PER_EPOCH
    assert defaults.batch_tokens("cpu", 3_660, n_tokens) == defaults.CPU_BATCH_TOKENS  # Online Retail
    assert defaults.batch_tokens("cpu", 20_001, n_tokens) == defaults.CPU_LOGIT_CELLS // 20_001
    assert defaults.autoencoder_batch(20_000, "cuda", None) == defaults.AE_GPU_MAX_USERS
    assert defaults.autoencoder_batch(3_659, "cpu", None) == 512


def test_sequence_trains_through_the_chunked_softmax_like_the_full_one(prepared, monkeypatch):
    """The same fit with the logit budget forced below one step's logits (the GPU's regime) follows the
    full softmax's losses."""
    from gpuclust.features.learned import defaults

    full = SequenceFeaturizer(epochs=2, precision="fp32", seed=0)
    x_full = full.fit_transform(prepared, cpu_backend())
    monkeypatch.setattr(defaults, "CPU_LOGIT_CELLS", 64 * 40)
    chunked = SequenceFeaturizer(epochs=2, precision="fp32", seed=0, batch_tokens=full.info_["batch_tokens"])
    x_chunked = chunked.fit_transform(prepared, cpu_backend())
    a, b = full.info_["training"]["history"], chunked.info_["training"]["history"]
    assert [round(r["train_loss"], 3) for r in a] == [round(r["train_loss"], 3) for r in b]
    assert float((x_full * x_chunked).sum(1).min()) > 0.999


def test_transformer_cell_with_sdpa_matches_the_masked_encoder_layer():
    """The causal SDPA blocks give what nn.TransformerEncoder with causal and key-padding masks gave on
    every real position (right padding), with the same parameter names (saved models still load)."""
    import torch

    from gpuclust.features.learned.sequence import build_network

    torch.manual_seed(0)
    net = build_network(50, 3, 64, "transformer", 2, 0.1, 30).eval()
    lens = torch.tensor([12, 9, 5, 1])
    mask = torch.arange(12)[None] < lens[:, None]
    items, kinds, gaps = (torch.randint(1, n, (4, 12)) * mask for n in (51, 4, 30))
    new = net(items, kinds, gaps, lens, mask)
    x = net.items(items) + net.kinds(kinds) + net.gaps(gaps) + net.positions(torch.arange(12))[None]
    causal = torch.triu(torch.ones(12, 12, dtype=torch.bool), 1)
    old = net.norm(net.encoder(x, mask=causal, src_key_padding_mask=~mask, is_causal=True))
    assert torch.allclose(new[mask], old[mask], atol=1e-5)
    assert "encoder.layers.0.self_attn.in_proj_weight" in net.state_dict()


def test_sequence_batches_are_packed_by_length_and_report_their_padding(prepared):
    f = SequenceFeaturizer(epochs=1, seed=0)
    f.fit_transform(prepared, cpu_backend())
    lengths = np.bincount(prepared.events.user_idx.to_numpy())
    plan = TokenBatcher(lengths, f.info_["batch_tokens"], 4096, 0).plan(shuffle=False)
    padded = sum(b.tokens for b in plan)
    assert f.info_["padding_share"] == round(1 - lengths.sum() / padded, 4)
    assert 0 <= f.info_["padding_share"] < 0.2  # sorted by length: a random order pads far more
    shuffled = np.random.default_rng(0).permutation(len(lengths))
    naive = sum(lengths[c].max() * len(c) for c in np.array_split(shuffled, len(plan)))
    assert padded < naive


def test_a_learned_feature_of_weight_zero_does_not_train(small):
    cfg = PipelineConfig(device="cpu")
    cfg.features.features = ("tfidf", "sequence")
    cfg.features.weights["sequence"] = 0.0
    model = UserClusterer(3, config=cfg).fit(small.events, small.items)
    features = model.manifest_["features"]
    assert "sequence" not in features["blocks"] and "sequence" not in features["layout"]
    assert features["skipped"] == {"sequence": "weight 0: not computed"}
    assert [f.name for f in model.featurizers_] == ["tfidf"]  # no network, no training report
    assert "features.sequence" not in model.manifest_["timings"]["stages"]  # no training time
