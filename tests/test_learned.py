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
from gpuclust.features.learned.training import Trainer
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
