"""Drift against the fit (`gpuclust drift`), and what a saved model keeps to measure it and to recommend."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.quality.drift import DriftCounts, Thresholds, compare, psi
from gpuclust.synth import SynthSpec, generate, write


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    write(SynthSpec(n_users=1200, n_items=500, n_groups=4, seed=3), root / "fit")
    write(SynthSpec(n_users=500, n_items=500, n_groups=4, seed=3), root / "same")  # the same world, fewer users
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    import pandas as pd

    fitted = UserClusterer(config=config).fit(pd.read_parquet(root / "fit" / "events.parquet"),
                                              pd.read_parquet(root / "fit" / "items.parquet"))
    fitted.save(root / "model")
    return root, fitted


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * np.log(1.2 / 0.8))
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.2


def test_the_same_population_does_not_alert_and_a_shifted_one_does(world, tmp_path, monkeypatch, capsys):
    root, _ = world
    code, out, _ = cli(monkeypatch, capsys, "drift", "--model", root / "model", "--events",
                       root / "same" / "events.parquet", "--json", "--out", tmp_path / "drift.json")
    assert code == 0
    result = json.loads(out)
    assert json.loads((tmp_path / "drift.json").read_text())["rows"] == result["rows"]
    rows = {r["metric"]: r for r in result["rows"]}
    assert set(rows) == {"cluster_share_psi", "event_type_psi", "mean_distance_change", "anomaly_share_increase",
                         "unknown_item_share", "unknown_event_type_share"}
    assert not result["alert"] and rows["cluster_share_psi"]["value"] < 0.05

    import pandas as pd

    shifted = pd.read_parquet(root / "same" / "events.parquet")
    shifted = shifted[shifted["event_type"] != "view"].copy()  # a tracking change: views no longer logged
    shifted["event_type"] = shifted["event_type"].astype(str)
    shifted.loc[shifted.index[::5], "event_type"] = "wishlist"  # and a new event type
    shifted.loc[shifted.index[1::3], "item_id"] = -1  # and items the model never saw
    shifted.to_parquet(tmp_path / "shifted.parquet")
    code, out, _ = cli(monkeypatch, capsys, "drift", "--model", root / "model", "--events", tmp_path / "shifted.parquet")
    assert code == 1
    for measure in ("event_type_psi", "unknown_item_share", "unknown_event_type_share"):
        line = next(line for line in out.splitlines() if measure in line)
        assert "ALERT" in line
    code, _, _ = cli(monkeypatch, capsys, "drift", "--model", root / "model", "--events", tmp_path / "shifted.parquet",
                     "--fail-above", 100, "--max-distance-change", 100, "--max-anomaly-increase", 1,
                     "--max-unknown-items", 1, "--max-unknown-event-types", 1)
    assert code == 0


def test_compare_reads_counts_against_the_baseline():
    base = {"users": 100, "cluster_shares": [0.5, 0.5], "mean_distance": 1.0, "anomaly_share": 0.01,
            "event_type_shares": {"view": 1.0}, "event_types": ["view"]}
    now = DriftCounts(users=10, cluster_users=[10, 0], distance_sum=20.0, anomalous=5, events=100, unknown_items=30,
                      unknown_event_types=0, event_types={"view": 70})
    rows = {r["metric"]: r for r in compare(base, now, Thresholds())}
    assert rows["mean_distance_change"]["value"] == pytest.approx(1.0) and rows["mean_distance_change"]["alert"]
    assert rows["anomaly_share_increase"]["value"] == pytest.approx(0.49)
    assert rows["unknown_item_share"]["value"] == pytest.approx(0.3) and rows["unknown_item_share"]["alert"]
    assert rows["cluster_share_psi"]["alert"] and not rows["event_type_psi"]["alert"]
    assert DriftCounts(cluster_users=[1]).add(now).cluster_users == [11, 0]


def test_the_saved_model_keeps_what_recommend_and_drift_need(world):
    root, fitted = world
    loaded = UserClusterer.load(root / "model", device="cpu")
    table = loaded.segments_.table
    assert table.shape == (5, len(loaded.vocabulary_))
    np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(table, fitted.segments_.table)
    assert loaded.segments_.blend_weight in [round(0.1 * i, 1) for i in range(11)]
    assert loaded.segments_.tuning["how"].startswith("tuned at fit time")
    assert loaded.drift_baseline_ == fitted.drift_baseline_
    assert sum(loaded.drift_baseline_["cluster_shares"]) == pytest.approx(1.0)
    # Each cluster's own items come first in its row: it differs from the global row.
    assert all(np.argmax(table[c]) != np.argmax(table[4]) or table[c].max() > table[4].max() for c in range(4))


def test_a_given_blend_weight_is_kept():
    data = generate(SynthSpec(n_users=300, n_items=150, n_groups=3, seed=2))
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 3
    config.recommend.blend_weight = 0.3
    fitted = UserClusterer(config=config).fit(data.events, data.items)
    assert fitted.segments_.blend_weight == 0.3 and fitted.segments_.tuning == {"how": "given"}
    np.testing.assert_allclose(fitted.segments_.scores(0), 0.3 * fitted.segments_.table[0]
                               + 0.7 * fitted.segments_.table[3], rtol=1e-6)


@pytest.mark.parametrize("change, measure", [
    ({"item_id": lambda ev: "new-" + ev["item_id"].astype(str)}, "unknown_item_share"),
    ({"event_type": lambda ev: "wishlist"}, "unknown_event_type_share"),
])
def test_total_drift_is_an_alert_not_bad_input(world, tmp_path, monkeypatch, capsys, change, measure):
    """100% unknown items or event types is the largest drift there is: exit 1 (cron's alert), not exit 2,
    which cron reads as a broken file."""
    import pandas as pd

    root, _ = world
    events = pd.read_parquet(root / "same" / "events.parquet").assign(**change)
    events.to_parquet(tmp_path / "new.parquet")
    code, out, err = cli(monkeypatch, capsys, "drift", "--model", root / "model", "--events", tmp_path / "new.parquet",
                         "--json")
    assert code == 1, err
    result = json.loads(out)  # strict JSON: the measures nobody was placed for are null, not NaN
    rows = {r["metric"]: r for r in result["rows"]}
    assert rows[measure]["value"] == 1.0 and rows[measure]["alert"]
    assert result["users"] == 0 and rows["mean_distance_change"]["value"] is None
    assert not rows["mean_distance_change"]["alert"]


def test_a_broken_file_is_still_bad_input(world, tmp_path, monkeypatch, capsys):
    import pandas as pd

    root, _ = world
    events = pd.read_parquet(root / "same" / "events.parquet")
    events["timestamp"] = "not a time"
    events.to_parquet(tmp_path / "broken.parquet")
    code, _, err = cli(monkeypatch, capsys, "drift", "--model", root / "model", "--events", tmp_path / "broken.parquet")
    assert code == 2 and "timestamp" in err


@pytest.mark.parametrize("flag", ["--fail-above", "--max-distance-change", "--max-anomaly-increase",
                                  "--max-unknown-items", "--max-unknown-event-types"])
@pytest.mark.parametrize("value", ["nan", "-0.1"])
def test_a_nan_or_negative_threshold_is_refused_in_one_line(world, monkeypatch, capsys, flag, value):
    root, _ = world
    code, out, err = cli(monkeypatch, capsys, "drift", "--model", root / "model", "--events",
                         root / "same" / "events.parquet", flag, value)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and flag in err and "must be a number >= 0" in err


def test_an_infinite_threshold_switches_that_alert_off():
    assert Thresholds(psi=float("inf")).psi == float("inf")
    with pytest.raises(ValueError, match="drift threshold unknown_items"):
        Thresholds(unknown_items=float("nan"))
