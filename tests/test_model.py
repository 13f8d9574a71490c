"""Saved models: same labels after a round trip, new users placed by the learned featurisers."""

import json

import numpy as np
import pytest

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.errors import UsageError
from gpuclust.synth import SynthSpec, generate


@pytest.fixture(scope="module")
def fitted():
    data = generate(SynthSpec(n_users=1500, n_items=600, n_groups=4, seed=1))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    config.features.normalise = "quantile"
    return UserClusterer(config=config).fit(data.events, data.items), data


def test_loaded_model_gives_the_same_labels_on_the_same_input(fitted, tmp_path):
    estimator, data = fitted
    estimator.save(tmp_path / "model")
    loaded = UserClusterer.load(tmp_path / "model", device="cpu")
    again = loaded.predict(data.events)
    np.testing.assert_array_equal(again["cluster"].to_numpy(), estimator.labels_["cluster"].to_numpy())
    np.testing.assert_allclose(again["distance"].to_numpy(), estimator.labels_["distance"].to_numpy(), rtol=1e-4,
                               atol=1e-5)


def test_new_users_are_placed_with_their_planted_peers(fitted):
    estimator, data = fitted
    fresh = generate(SynthSpec(n_users=1500, n_items=600, n_groups=4, seed=1))  # same world, same users
    subset = fresh.events[fresh.events["user_id"].isin(fresh.truth["user_id"].iloc[:300])]
    placed = estimator.predict(subset)
    original = estimator.labels_.set_index("user_id").loc[placed["user_id"], "cluster"].to_numpy()
    # Statistics are those learned at fit time, so a user's own history lands in the same cluster.
    assert (placed["cluster"].to_numpy() == original).mean() > 0.95


def test_unknown_items_are_dropped_and_counted(fitted):
    estimator, data = fitted
    events = data.events.head(200).copy()
    events.loc[events.index[:50], "item_id"] = -12345
    _, data = estimator.place(events)
    steps = {s.step: s for s in data.steps}
    assert steps["items_unknown_to_model"].dropped == 50


def test_events_the_model_cannot_read_say_how_to_fix_them_without_flags_assign_lacks(fitted):
    """assign has no --event-weights and no minimum-count filters, yet its errors pointed at them."""
    estimator, data = fitted
    events = data.events.head(200).copy()
    events["item_id"] = -12345
    with pytest.raises(UsageError, match="none of the events is on an item the saved model knows"):
        estimator.place(events)
    events = data.events.head(200).copy()
    events["event_type"] = "teleport"
    with pytest.raises(UsageError, match="map yours to these in the events file, or refit with gpuclust run "
                                         "--event-weights"):
        estimator.place(events)


@pytest.mark.parametrize("damage", ["truncate", "tamper", "remove", "garbage-json"])
def test_damaged_model_is_a_clear_error(fitted, tmp_path, damage):
    estimator, _ = fitted
    model = estimator.save(tmp_path / "m")
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
        UserClusterer.load(model, device="cpu")


def test_model_files_hold_no_pickle(fitted, tmp_path):
    estimator, _ = fitted
    model = estimator.save(tmp_path / "m")
    assert sorted(p.name for p in model.iterdir()) == [".gpuclust.json", "arrays.safetensors", "assignments.parquet",
                                                       "checksums.sha256", "items.parquet", "map.parquet", "model.json"]
    meta = json.loads((model / "model.json").read_text())
    assert [f["name"] for f in meta["featurizers"]] == ["behaviour", "tfidf"]


def test_text_features_survive_a_round_trip(tmp_path):
    data = generate(SynthSpec(n_users=300, n_items=150, n_groups=3, seed=2))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 3
    config.features.features = ("behaviour", "text")
    fitted = UserClusterer(config=config).fit(data.events, data.items)
    fitted.save(tmp_path / "m")
    loaded = UserClusterer.load(tmp_path / "m", device="cpu")
    again = loaded.predict(data.events)
    np.testing.assert_array_equal(again["cluster"].to_numpy(), fitted.labels_["cluster"].to_numpy())


# --- integrity: every file the loader reads is verified ------------------------------------------

def _rewrite_checksums(model) -> None:
    """What a careless editor (or an attacker) does after changing a file: make the checksums agree."""
    import hashlib

    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(model.iterdir()) if p.name != "checksums.sha256"]
    (model / "checksums.sha256").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def saved(fitted, tmp_path):
    estimator, _ = fitted
    return estimator.save(tmp_path / "m")


def test_every_file_is_covered_by_the_checksums(saved):
    listed = {line.split("  ", 1)[1] for line in (saved / "checksums.sha256").read_text().splitlines()}
    assert listed == {p.name for p in saved.iterdir()} - {"checksums.sha256"}


@pytest.mark.parametrize("damage", ["change", "remove", "add", "rename"])
def test_any_single_file_changed_removed_added_or_renamed_is_refused(saved, damage):
    for path in sorted(saved.iterdir()):
        backup = path.read_bytes()
        if damage == "change":
            raw = bytearray(backup)
            raw[len(raw) // 2] ^= 0x01
            path.write_bytes(bytes(raw))
        elif damage == "remove":
            path.unlink()
        elif damage == "rename":
            path.rename(path.with_name(path.name + ".bak"))
        else:
            (saved / "extra.bin").write_bytes(b"x")
        with pytest.raises(UsageError, match="model"):
            UserClusterer.load(saved, device="cpu")
        for leftover in (path.with_name(path.name + ".bak"), saved / "extra.bin"):
            leftover.unlink(missing_ok=True)
        path.write_bytes(backup)
    UserClusterer.load(saved, device="cpu")  # restored: loads again


def test_emptied_checksums_do_not_let_a_modified_file_through(saved):
    arrays = saved / "arrays.safetensors"
    raw = bytearray(arrays.read_bytes())
    raw[-1] ^= 0xFF
    arrays.write_bytes(bytes(raw))
    (saved / "checksums.sha256").write_text("")
    with pytest.raises(UsageError, match="model"):
        UserClusterer.load(saved, device="cpu")


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/model.json", ".."])
def test_names_in_the_checksums_must_be_plain_names_in_the_folder(saved, name):
    with (saved / "checksums.sha256").open("a") as fh:
        fh.write(f"{'0' * 64}  {name}\n")
    with pytest.raises(UsageError, match="malformed line"):
        UserClusterer.load(saved, device="cpu")


@pytest.mark.parametrize("document", ["[]", "{}", "null", '{"format": "gpuclust-model", "version": 2}'])
def test_a_malformed_model_json_is_one_clear_error(saved, document):
    (saved / "model.json").write_text(document)
    _rewrite_checksums(saved)
    with pytest.raises(UsageError, match="model"):
        UserClusterer.load(saved, device="cpu")


def test_arrays_of_another_model_are_refused(saved, tmp_path):
    data = generate(SynthSpec(n_users=400, n_items=300, n_groups=3, seed=5))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 3
    config.features.features = ("behaviour",)
    other = UserClusterer(config=config).fit(data.events, data.items).save(tmp_path / "other")
    (saved / "arrays.safetensors").write_bytes((other / "arrays.safetensors").read_bytes())
    _rewrite_checksums(saved)
    with pytest.raises(UsageError, match="malformed"):
        UserClusterer.load(saved, device="cpu")


def test_a_model_of_the_old_format_is_refused_with_the_fix(saved):
    (saved / "checksums.sha256").unlink()
    with pytest.raises(UsageError, match="re-run"):
        UserClusterer.load(saved, device="cpu")


def test_model_json_is_strict_json_even_when_a_metric_is_undefined(fitted, tmp_path):
    estimator, _ = fitted
    metrics = estimator.manifest_["metrics"]
    kept = metrics["calinski_harabasz"]
    metrics["calinski_harabasz"] = float("nan")  # one cluster of identical users gives NaN
    try:
        model = estimator.save(tmp_path / "m")
    finally:
        metrics["calinski_harabasz"] = kept
    text = (model / "model.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"model.json holds {name}"))
    assert UserClusterer.load(model).metrics_["calinski_harabasz"] is None
