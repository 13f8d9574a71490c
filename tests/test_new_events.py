"""`gpuclust synth --new-users N`: new_events.parquet, the users `assign`, `drift` and the service place."""

from __future__ import annotations

import json

import pandas as pd

from gpuclust.synth import SynthSpec, write
from tests.helpers import cli


def test_new_users_are_other_people_of_the_same_shop(tmp_path):
    spec = SynthSpec(n_users=300, n_items=200, n_groups=3, seed=4)
    summary = write(spec, tmp_path / "with", new_users=120)
    write(spec, tmp_path / "without")
    events = pd.read_parquet(tmp_path / "with" / "events.parquet")
    new = pd.read_parquet(summary["files"]["new_events"])
    items = pd.read_parquet(tmp_path / "with" / "items.parquet")
    assert new["user_id"].nunique() == 120 and not set(new["user_id"]) & set(events["user_id"])
    assert new["item_id"].isin(items["item_id"]).all()
    assert set(new["event_type"]) <= set(events["event_type"])
    assert new["timestamp"].between(events["timestamp"].min() - pd.Timedelta("1D"),
                                    events["timestamp"].max() + pd.Timedelta("1D")).all()
    # The log itself does not change when new users are asked for, and the new users are seeded.
    pd.testing.assert_frame_equal(events, pd.read_parquet(tmp_path / "without" / "events.parquet"))
    assert not (tmp_path / "without" / "new_events.parquet").exists()
    write(spec, tmp_path / "again", new_users=120)
    pd.testing.assert_frame_equal(new, pd.read_parquet(tmp_path / "again" / "new_events.parquet"))


def test_cli_writes_new_events_and_refuses_a_negative_count(tmp_path, monkeypatch, capsys):
    code, out, err = cli(monkeypatch, capsys, "synth", "--users", 200, "--items", 100, "--groups", 2,
                         "--new-users", 30, "--out", tmp_path / "data", "--json")
    assert code == 0, err
    assert json.loads(out)["files"]["new_users"] == 30
    assert pd.read_parquet(tmp_path / "data" / "new_events.parquet")["user_id"].nunique() == 30
    code, _, err = cli(monkeypatch, capsys, "synth", "--users", 200, "--new-users", -1, "--out", tmp_path / "bad")
    assert code == 2 and "--new-users" in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad").exists()
