"""Audiences: `gpuclust export` writes each segment's users for a CRM or an ad platform, safely."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import cli, log_runs, log_with_a_tiny_group

from gpuclust.errors import UsageError
from gpuclust.io.audiences import export_audiences
from gpuclust.privacy import Pseudonymiser

KEY = b"k3y-for-the-export-tests-0123456789"


def _log():
    events, items, _ = log_with_a_tiny_group()
    return events, items


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run on raw ids and one pseudonymised, each with a tiny cluster of 5 users."""
    root = tmp_path_factory.mktemp("export")
    (root / "key").write_bytes(KEY)
    return log_runs(root, *_log(), k=4, runs={"run": (), "private": ("--pseudonymise", root / "key")})


def _small(run) -> int:
    sizes = pd.read_parquet(run / "assignments.parquet")["cluster"].value_counts()
    (small,) = [int(c) for c, n in sizes.items() if n < 10]
    return small


def test_one_file_per_segment_with_scores_and_the_small_one_withheld(runs, tmp_path, monkeypatch, capsys):
    run, out = runs / "run", tmp_path / "audiences"
    small = _small(run)
    code, stdout, err = cli(monkeypatch, capsys, "export", "--run", run, "--format", "csv", "--out", out)
    assert code == 0, err
    assert err.strip() == f"withheld clusters {small}: fewer than 10 users (privacy.min_group_size)"
    index = json.loads((out / "export.json").read_text())
    assigned = pd.read_parquet(run / "assignments.parquet")
    names = {c["cluster"]: c["name"] for c in json.loads((run / "clusters.json").read_text())["clusters"]}
    kept = sorted(c for c in assigned["cluster"].unique() if c != small)
    assert [s["segment"] for s in index["segments"]] == kept and index["withheld"]["clusters"] == [small]
    assert sorted(p.name for p in (out / "segments").iterdir()) == [f"segment-{c}.csv" for c in kept]
    for c in kept:
        rows = pd.read_csv(out / "segments" / f"segment-{c}.csv")
        mine = assigned[assigned["cluster"] == c]
        assert list(rows.columns) == ["user_id", "segment", "segment_name", "score", "distance", "anomaly_score"]
        assert sorted(rows["user_id"]) == sorted(mine["user_id"]) and set(rows["segment_name"]) == {names[c]}
        assert rows["score"].is_monotonic_decreasing and rows["score"].iloc[0] == 1.0
        assert rows["distance"].is_monotonic_increasing  # the most typical first
        joined = rows.merge(mine, on="user_id")
        np.testing.assert_allclose(joined["anomaly_score_x"], joined["anomaly_score_y"], rtol=1e-6)
    assert f"exported {len(assigned) - 5:,} users in {len(kept)} segments" in stdout


def test_one_parquet_file_with_a_segment_column_chosen_clusters_and_a_min_score(runs, tmp_path):
    run = runs / "run"
    small = _small(run)
    wanted = [c for c in range(4) if c != small][:2]
    record = export_audiences(run, tmp_path / "a", "parquet", wanted, min_score=0.5, single_file=True)
    table = pd.read_parquet(tmp_path / "a" / "audiences.parquet")
    assert sorted(table["segment"].unique()) == wanted and (table["score"] >= 0.5).all()
    sizes = pd.read_parquet(run / "assignments.parquet")["cluster"].value_counts()
    for c in wanted:  # about half of each segment is at least as central as its median user
        assert abs((table["segment"] == c).sum() - sizes[c] / 2) <= 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".gpuclust.json", "audiences.parquet", "export.json"]
    assert record["withheld"] is None and record["min_score"] == 0.5


def test_pseudonymised_runs_export_pseudonyms_and_withhold_their_small_groups(runs, tmp_path):
    run = runs / "private"
    events, _ = _log()
    record = export_audiences(run, tmp_path / "p", "csv")
    files = list((tmp_path / "p" / "segments").iterdir())
    ids = set(pd.concat([pd.read_csv(f) for f in files])["user_id"])
    pseudonyms = {Pseudonymiser(KEY).one(str(u)) for u in events["user_id"].unique()}
    assert ids <= pseudonyms and not ids & {str(u) for u in events["user_id"].unique()}
    assert record["pseudonymised"] and record["withheld"]["clusters"] == [_small(run)]


def test_bad_requests_are_one_line_and_write_nothing(runs, tmp_path, monkeypatch, capsys):
    run = runs / "run"
    small = _small(run)
    cases = [
        (("--format", "xlsx"), "--format must be one of csv, parquet"),
        (("--clusters", "3,x"), "give cluster numbers separated by commas"),
        (("--clusters", "42"), "the run has no such cluster; it has 0, 1, 2, 3"),
        (("--clusters=-1",), "no such cluster (-1 is noise: users no cluster took, never an audience)"),
        (("--min-score", "1.5"), "--min-score must be a number from 0 to 1"),
        (("--clusters", str(small)), "nothing to export"),
        (("--out", run / "audiences"), "is inside the run folder"),
    ]
    for args, message in cases:
        target = () if "--out" in args else ("--out", tmp_path / "never")
        code, _, err = cli(monkeypatch, capsys, "export", "--run", run, *args, *target)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "never").exists() and not (run / "audiences").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(UsageError, match="holds files gpuclust did not write"):
        export_audiences(run, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_an_export_reads_the_assignments_once_and_names_a_missing_column(runs, tmp_path, monkeypatch, capsys):
    import shutil

    run = runs / "run"
    reads = []
    real = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda path, *a, **k: reads.append(str(path)) or real(path, *a, **k))
    export_audiences(run, tmp_path / "once")
    assert [p for p in reads if p.endswith("assignments.parquet")] == [str(run / "assignments.parquet")]
    monkeypatch.undo()
    old = tmp_path / "old"
    shutil.copytree(run, old)
    real(old / "assignments.parquet").drop(columns=["distance"]).to_parquet(old / "assignments.parquet")
    code, _, err = cli(monkeypatch, capsys, "export", "--run", old, "--out", tmp_path / "never")
    assert code == 2 and "lacks the column(s) distance" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "never").exists()


def test_a_second_export_replaces_the_first_as_one_unit(runs, tmp_path):
    run, out = runs / "run", tmp_path / "again"
    export_audiences(run, out, "csv")
    export_audiences(run, out, "parquet", single_file=True)
    assert sorted(p.name for p in out.iterdir()) == [".gpuclust.json", "audiences.parquet", "export.json"]
    default = export_audiences(run)  # beside the run folder, never in it
    assert default["out"] == str(runs / "run-audiences")
