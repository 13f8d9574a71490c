"""Pseudonymised ids: no raw user id in any output, report, model or log; small groups withheld."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import cli, log_with_a_tiny_group

from gpuclust import PipelineConfig, UserClusterer
from gpuclust.errors import UsageError
from gpuclust.privacy import Pseudonymiser, canonical_id, suppress_small_groups

RAW = "rawuser"  # every raw id starts with this: finding it anywhere is a leak
KEY = b"k3y-for-the-privacy-tests-0123456789"


def _private_log():
    """A log with a tiny group (helpers.log_with_a_tiny_group) and user ids that are easy to spot."""
    events, items, truth = log_with_a_tiny_group()
    for frame in (events, truth):
        frame["user_id"] = [f"{RAW}-{u:05d}" for u in frame["user_id"]]
    return events, items, truth


def _leaks(path) -> list[str]:
    """Where a raw id or the key shows up in a file: Parquet cell by cell, everything else byte by byte."""
    found = []
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
        text = " ".join(table.astype(str).to_numpy().ravel().tolist() + list(map(str, table.columns)))
        raw = text.encode()
    else:
        raw = path.read_bytes()
    if RAW.encode() in raw:
        found.append(f"{path}: raw id")
    if KEY in raw:
        found.append(f"{path}: key")
    return found


def test_no_raw_id_reaches_any_output_report_model_or_log(tmp_path, monkeypatch, capsys):
    events, items, truth = _private_log()
    data = tmp_path / "data"
    data.mkdir()
    events.to_parquet(data / "events.parquet")
    items.to_parquet(data / "items.parquet")
    truth.to_csv(data / "truth.csv", index=False)  # a CSV: the ids are read as text there too
    key = tmp_path / "key"
    key.write_bytes(KEY + b"\n")
    run = tmp_path / "run"
    logs = []
    for args in (
        ("run", "--events", data / "events.parquet", "--items", data / "items.parquet", "--truth", data / "truth.csv",
         "--k", 4, "--anomalies", 5, "--pseudonymise", key, "--out", run),
        ("run", "--events", data / "events.parquet", "--items", data / "items.parquet", "--k", 4, "--anomalies", 5,
         "--pseudonymise", key, "--out", tmp_path / "run-json", "--json"),
        ("report", "--run", run),
        ("assign", "--model", run / "model", "--events", data / "events.parquet", "--pseudonymise", key,
         "--out", tmp_path / "assign", "--json"),
        ("evaluate", "--events", data / "events.parquet", "--k", 4, "--pseudonymise", key,
         "--out", tmp_path / "evaluate.json", "--json"),
        ("drift", "--model", run / "model", "--events", data / "events.parquet", "--pseudonymise", key,
         "--out", tmp_path / "drift.json", "--json"),
    ):
        code, out, err = cli(monkeypatch, capsys, *args)
        assert code == 0, (args[0], err)
        logs.append(out + err)
    for text in logs:
        assert RAW not in text and KEY.decode() not in text
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != data and p != key]
    assert len(files) > 15
    assert [leak for p in files for leak in _leaks(p)] == []

    # What the outputs say instead: pseudonyms, the key's fingerprint, and no exemplar users.
    fingerprint = Pseudonymiser(KEY).fingerprint
    assigned = pd.read_parquet(run / "assignments.parquet")
    assert set(assigned["user_id"]) == {Pseudonymiser(KEY).one(u) for u in events["user_id"].unique()}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["privacy"] == {"pseudonymised": True, "method": "HMAC-SHA256, first 128 bits, hex",
                                   "key_fingerprint": fingerprint, "min_group_size": 10}
    assert manifest["metrics"]["ari"] > 0.9  # the truth file's ids were pseudonymised alike
    clusters = json.loads((run / "clusters.json").read_text())
    assert all("exemplars" not in c for c in clusters["clusters"])
    sizes = assigned["cluster"].value_counts()
    small = {int(c) for c, n in sizes.items() if n < 10}
    assert small, "the tiny planted group should be a cluster of its own"
    for c in clusters["clusters"]:
        if c["cluster"] in small:
            assert c["suppressed"] == "fewer than 10 users" and c["size"] is None and c["top_items"] == []
        else:
            assert "suppressed" not in c and c["size"] == int(sizes[c["cluster"]])
    assert "fewer than 10 users is withheld" in (run / "report.html").read_text()


def test_a_private_model_places_users_only_with_its_key(tmp_path):
    events, items, _ = _private_log()
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    fitted = UserClusterer(config=config, pseudonymise=KEY).fit(events, items)
    placed = fitted.predict(events.head(100))
    assert placed["user_id"].str.fullmatch("[0-9a-f]{32}").all()
    fitted.save(tmp_path / "m")
    with pytest.raises(UsageError, match="pseudonymised user ids: give the same key"):
        UserClusterer.load(tmp_path / "m", device="cpu").predict(events.head(100))
    with pytest.raises(UsageError, match="is not the key"):
        UserClusterer.load(tmp_path / "m", device="cpu", pseudonymise=b"another key of enough bytes")
    again = UserClusterer.load(tmp_path / "m", device="cpu", pseudonymise=KEY).predict(events.head(100))
    pd.testing.assert_frame_equal(again, placed)
    plain = UserClusterer(config=config).fit(events, items).save(tmp_path / "plain")
    with pytest.raises(UsageError, match="raw user ids"):
        UserClusterer.load(plain, device="cpu", pseudonymise=KEY)


def test_one_user_one_pseudonym_whatever_the_column_type():
    p = Pseudonymiser(KEY)
    as_ints = p.column(pd.Series([501218, 7]))
    as_floats = p.column(pd.Series([501218.0, 7.0]))  # a CSV column with a gap
    as_text = p.column(pd.Series(["501218", "7"]))
    assert as_ints.tolist() == as_floats.tolist() == as_text.tolist()
    assert p.column(pd.Series([1.0, None])).isna().tolist() == [False, True]
    assert canonical_id(np.int64(5)) == canonical_id(5.0) == "5"
    assert KEY.decode() not in repr(p) and p.fingerprint.startswith("sha256:")


@pytest.mark.parametrize("key", [b"", b"short", b"   padded   "])
def test_a_short_key_is_refused(tmp_path, key):
    path = tmp_path / "key"
    path.write_bytes(key)
    with pytest.raises(UsageError, match="at least 16"):
        Pseudonymiser.from_file(path)


def test_min_group_size_without_a_key_sets_the_smallest_audience_export_writes(tmp_path, monkeypatch, capsys):
    """Without --pseudonymise the run shows every cluster's figures, but `export` honours the run's
    min_group_size on every run: the flag has an effect there, so it is taken (it was refused as having none)."""
    from helpers import blob_events

    events, items, _ = blob_events(n_users=120)
    events.to_parquet(tmp_path / "e.parquet")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "e.parquet", "--k", 3, "--device", "cpu",
                       "--min-group-size", 1000, "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["config"]["privacy"]["min_group_size"] == 1000
    code, _, err = cli(monkeypatch, capsys, "export", "--run", tmp_path / "o", "--out", tmp_path / "aud")
    assert code == 2 and "keeps 1000 users or more" in err and not (tmp_path / "aud").exists()


def test_suppression_withholds_small_groups_and_all_exemplars():
    profiles = [{"cluster": 0, "size": 50, "share": 0.9, "exemplars": ["a"], "top_items": [1]},
                {"cluster": 1, "size": 4, "share": 0.1, "exemplars": ["b"], "top_items": [2], "label": "x"}]
    kept, population = suppress_small_groups(profiles, {"events": 3.0}, 10, 54)
    assert kept[0] == {"cluster": 0, "size": 50, "share": 0.9, "top_items": [1]}
    assert kept[1]["suppressed"] == "fewer than 10 users" and kept[1]["label"] is None and kept[1]["size"] is None
    assert population == {"events": 3.0}
    assert suppress_small_groups(profiles, {"events": 3.0}, 100, 54)[1] == {"events": None}


def test_a_withheld_clusters_members_are_not_listed_as_anomalies():
    """The tiny group (5 users on their own items) is withheld: its users are not in the anomaly list,
    though they are the most unusual users of the log."""
    events, items, _ = _private_log()
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 4
    config.assess.anomalies = 500  # every user who is listed at all
    fitted = UserClusterer(config=config, pseudonymise=KEY).fit(events, items)
    withheld = {p["cluster"] for p in fitted.profiles_ if p.get("suppressed")}
    assert withheld, "the tiny group should be withheld"
    assert fitted.anomalies_ and not [a for a in fitted.anomalies_ if a["cluster"] in withheld]
    everyone = UserClusterer(config=config).fit(events, items).anomalies_
    assert len(everyone) > len(fitted.anomalies_)  # without privacy they are listed
