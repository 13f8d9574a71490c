"""Hostile input to the Dask path: absurd or malformed cluster options, datasets whose later files differ
from the first, hidden files, and signals at the worst moments. Each is one line and exit 2 (130/143 for a
signal), before any cluster starts where it can be, with nothing written and no worker left behind."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import cli

distributed = pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parents[1]


def _events(users: range, seed: int = 0) -> pd.DataFrame:
    """A few events per user, of the types and columns the defaults expect."""
    rows = [(u, (u * 7 + i) % 40, ("view", "click", "cart", "purchase")[(u + i) % 4],
             pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=u * 10 + i), float(i)) for u in users for i in range(6)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "value"])


def _dataset(folder: Path, last=lambda df: df) -> Path:
    """Three Parquet files; the last one passed through `last` (a fault)."""
    folder.mkdir(parents=True)
    for i in range(3):
        df = _events(range(i * 20, i * 20 + 20))
        (last(df) if i == 2 else df).to_parquet(folder / f"part.{i}.parquet")
    return folder


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("flags, message", [
    (["--memory-limit", "abc"], "'abc' is not an amount of memory"),
    (["--memory-limit", "12 parsecs"], "is not an amount of memory"),
    (["--memory-limit", "1KiB"], "below the 256 MiB a worker needs"),
    (["--memory-limit", "0"], "below the 256 MiB a worker needs"),
    (["--partitions", "100000"], "--partitions (dask.partitions) must be at most 4,096"),
    (["--partitions", "0"], "--partitions (dask.partitions) must be at least 1"),
    (["--workers", "64"], "is more than 4 per core of this 2-core machine (at most 8)"),
    (["--workers", "4", "--threads-per-worker", "4"], "= 16 is more than 4 per core"),
])
@pytest.mark.parametrize("command", ["run", "assign"])
def test_absurd_local_cluster_options_are_one_line_before_a_cluster_starts(tmp_path, monkeypatch, capsys, flags,
                                                                           message, command):
    monkeypatch.setattr("gpuclust.config.local_cores", lambda: 2)
    events = _dataset(tmp_path / "events")
    args = ["--events", events, "--out", tmp_path / "o", "--scheduler", "local", *flags]
    args = (["run", "--k", "2"] if command == "run" else ["assign", "--model", tmp_path / "no-model"]) + args
    started = time.perf_counter()
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and message in _one_line(err)
    assert time.perf_counter() - started < 10  # no cluster was started
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("address, message", [
    ("tcp://", "is not a scheduler address: give tcp://HOST:PORT"),
    ("tcp://:8786", "is not a scheduler address"),
    ("tcp://host", "is not a scheduler address"),
    ("tcp://host:0", "is not a scheduler address"),
    ("tcp://host:99999", "is not a scheduler address"),
    ("tcp://host:port", "is not a scheduler address"),
    ("tcp://host:8786/path", "is not a scheduler address"),
    ("http://host:8786", "http:// is not a Dask scheduler's protocol"),
    ("https://host:8786", "https:// is not a Dask scheduler's protocol"),
    ("inproc://host:1", "inproc:// is not a Dask scheduler's protocol"),
    ("host:8786", "neither 'local' nor a scheduler address"),
])
@pytest.mark.parametrize("command", ["run", "assign"])
def test_malformed_scheduler_addresses_are_one_line(tmp_path, monkeypatch, capsys, address, message, command):
    args = ["--events", tmp_path / "e.parquet", "--out", tmp_path / "o", "--scheduler", address]
    args = (["run", "--k", "2"] if command == "run" else ["assign", "--model", tmp_path / "no-model"]) + args
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and message in _one_line(err)


def test_well_formed_addresses_and_sizes_pass_validation():
    from gpuclust.config import DaskConfig, PipelineConfig, memory_bytes

    for address in ("tcp://10.0.0.5:8786", "tls://sched.example:8786", "tcp://[::1]:8786", "ucx://h:1"):
        PipelineConfig(dask=DaskConfig(scheduler=address)).validate()
    assert memory_bytes("auto") is None
    assert memory_bytes("2GiB") == 2 * 2**30 and memory_bytes("4 GB") == 4 * 10**9 and memory_bytes("3e9") == 3 * 10**9
    assert memory_bytes("512mib") == 512 * 2**20


@pytest.mark.parametrize("fault, message", [
    (lambda df: df.drop(columns=["event_type"]), "part.2.parquet has no column 'event_type', which"),
    (lambda df: df.assign(user_id=df["user_id"].astype(str)), "part.2.parquet: column 'user_id' is large_string where"),
    (lambda df: df.assign(timestamp=df["timestamp"].astype(str)), "part.2.parquet: column 'timestamp' is"),
    (lambda df: df.assign(event_type=df["event_type"].astype("category")), "column 'event_type' is dictionary"),
])
def test_a_later_file_with_other_columns_is_named_before_a_cluster_starts(tmp_path, monkeypatch, capsys, fault,
                                                                           message):
    """A missing column was a KeyError, another kind of value a 'P2P ... failed during unpack phase', both
    after the cluster had started and the shuffle had run."""
    events = _dataset(tmp_path / "events", fault)
    started = time.perf_counter()
    code, _, err = cli(monkeypatch, capsys, "run", "--events", events, "--k", "2", "--scheduler", "local",
                       "--out", tmp_path / "o")
    assert code == 2 and message in _one_line(err)
    assert time.perf_counter() - started < 10 and not (tmp_path / "o").exists()


def test_widths_that_dask_can_mix_are_accepted(tmp_path):
    from gpuclust.distributed.engine import check_file_schemas

    events = _dataset(tmp_path / "events", lambda df: df.assign(item_id=df["item_id"].astype("int32"),
                                                               timestamp=df["timestamp"].astype("datetime64[us]"),
                                                               value=df["value"].astype("float32")))
    files = sorted(str(p) for p in events.iterdir())
    assert check_file_schemas(files, ["user_id", "item_id", "event_type", "timestamp", "value"]) == set()


def test_hidden_and_underscore_files_in_a_dataset_folder_are_skipped(tmp_path):
    """dask.read_parquet on the folder read `.x.parquet` too (a traceback, or its rows); the files gpuclust
    found are what it reads."""
    import dask

    from gpuclust.config import ColumnMap
    from gpuclust.distributed.engine import read_events_lazy

    events = _dataset(tmp_path / "events")
    (events / ".x.parquet").write_bytes(b"junk")
    _events(range(1000, 1010)).drop(columns=["event_type"]).to_parquet(events / "_part.9.parquet")
    (events / "_SUCCESS").write_bytes(b"")
    lazy, rows, kind = read_events_lazy(events, ColumnMap(), "cpu")
    assert kind == "parquet" and rows == 3 * 20 * 6
    with dask.config.set(scheduler="synchronous"):
        assert len(lazy.compute()) == rows


def test_assign_on_the_cluster_names_a_mixed_file(tmp_path, monkeypatch, capsys):
    events = _dataset(tmp_path / "events")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", events / "part.0.parquet", "--k", "2",
                       "--min-item-events", "1", "--features", "behaviour,tfidf", "--out", tmp_path / "run")
    assert code == 0, err
    mixed = _dataset(tmp_path / "new", lambda df: df.assign(item_id=df["item_id"].astype(str)))
    code, _, err = cli(monkeypatch, capsys, "assign", "--model", tmp_path / "run" / "model", "--events", mixed,
                       "--scheduler", "local", "--out", tmp_path / "placed")
    assert code == 2 and "part.2.parquet: column 'item_id' is large_string" in _one_line(err)
    assert not (tmp_path / "placed").exists()
