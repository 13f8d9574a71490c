"""Saved models: same labels after a round trip, new users placed by the learned featurisers."""

import json

import numpy as np
import pytest

from gpuclust import Pipeline, PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.synth import SynthSpec, generate


@pytest.fixture(scope="module")
def fitted():
    data = generate(SynthSpec(n_users=1500, n_items=600, n_groups=4, seed=1))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    config.features.normalise = "quantile"
    return Pipeline(config).fit(data.events, data.items), data


def test_loaded_model_gives_the_same_labels_on_the_same_input(fitted, tmp_path):
    pipeline, data = fitted
    pipeline.save(tmp_path / "model")
    loaded = Pipeline.load(tmp_path / "model", device="cpu")
    again = loaded.assign(data.events)
    np.testing.assert_array_equal(again["cluster"].to_numpy(), pipeline.labels_["cluster"].to_numpy())
    np.testing.assert_allclose(again["distance"].to_numpy(), pipeline.labels_["distance"].to_numpy(), rtol=1e-4,
                               atol=1e-5)


def test_new_users_are_placed_with_their_planted_peers(fitted):
    pipeline, data = fitted
    fresh = generate(SynthSpec(n_users=1500, n_items=600, n_groups=4, seed=1))  # same world, same users
    subset = fresh.events[fresh.events["user_id"].isin(fresh.truth["user_id"].iloc[:300])]
    placed = pipeline.assign(subset)
    original = pipeline.labels_.set_index("user_id").loc[placed["user_id"], "cluster"].to_numpy()
    # Statistics are those learned at fit time, so a user's own history lands in the same cluster.
    assert (placed["cluster"].to_numpy() == original).mean() > 0.95


def test_unknown_items_are_dropped_and_counted(fitted):
    pipeline, data = fitted
    events = data.events.head(200).copy()
    events.loc[events.index[:50], "item_id"] = -12345
    pipeline.assign(events)
    steps = {s.step: s for s in pipeline.assign_data_.steps}
    assert steps["items_unknown_to_model"].dropped == 50


@pytest.mark.parametrize("damage", ["truncate", "tamper", "remove", "garbage-json"])
def test_damaged_model_is_a_clear_error(fitted, tmp_path, damage):
    pipeline, _ = fitted
    model = pipeline.save(tmp_path / "m")
    arrays = model / "arrays.safetensors"
    if damage == "truncate":
        arrays.write_bytes(arrays.read_bytes()[:100])
    elif damage == "tamper":
        raw = bytearray(arrays.read_bytes())
        raw[-1] ^= 0xFF
        arrays.write_bytes(bytes(raw))
    elif damage == "remove":
        (model / "items.parquet").unlink()
    else:
        (model / "model.json").write_text("{not json")
    with pytest.raises(UsageError, match="model"):
        Pipeline.load(model, device="cpu")


def test_model_files_hold_no_pickle(fitted, tmp_path):
    pipeline, _ = fitted
    model = pipeline.save(tmp_path / "m")
    assert sorted(p.name for p in model.iterdir()) == ["arrays.safetensors", "items.parquet", "model.json"]
    meta = json.loads((model / "model.json").read_text())
    assert [f["name"] for f in meta["featurizers"]] == ["behaviour", "tfidf"]


def test_text_features_survive_a_round_trip(tmp_path):
    data = generate(SynthSpec(n_users=300, n_items=150, n_groups=3, seed=2))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 3
    config.features.features = ("behaviour", "text")
    fitted = Pipeline(config).fit(data.events, data.items)
    fitted.save(tmp_path / "m")
    loaded = Pipeline.load(tmp_path / "m", device="cpu")
    again = loaded.assign(data.events)
    np.testing.assert_array_equal(again["cluster"].to_numpy(), fitted.labels_["cluster"].to_numpy())
