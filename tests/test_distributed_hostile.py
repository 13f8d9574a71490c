"""Hostile input to the Dask path: absurd or malformed cluster options, datasets whose later files differ
from the first, hidden files, and signals at the worst moments. Each is one line and exit 2 (130/143 for a
signal), before any cluster starts where it can be, with nothing written and no worker left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from gpuclust.errors import UsageError
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
    (["--workers", "2", "--partitions", "65"], "65 is more than 32 per worker thread (2 here: at most 64)"),
    (["--partitions", "512"], "512 is more than 32 per worker thread (2 here: at most 64)"),
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


def test_default_memory_share_below_the_floor_is_refused(monkeypatch):
    from gpuclust.config import DaskConfig
    from gpuclust.distributed import cluster

    monkeypatch.setattr(cluster, "total_memory_bytes", lambda: 2**30)
    with pytest.raises(UsageError, match="8 workers would get 115 MiB each, below the 256 MiB"):
        cluster.local_defaults(DaskConfig(workers=8))


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


def test_a_log_whose_every_event_weighs_zero_is_one_line_on_the_cluster_as_in_one_process(tmp_path, monkeypatch,
                                                                                         capsys):
    """Only views left, and views weigh 0: one process says so in one line; on Dask the featurisers ran on
    nothing and the run ended in "ValueError: zero-size array to reduction operation maximum" (exit 1)."""
    events = _dataset(tmp_path / "events") / "part.0.parquet"  # one file: what one process reads
    weights = ["--event-weights", "view=0,click=0,cart=0,purchase=0,rating=1"]  # the log has no rating
    said = []
    for where in ([], ["--scheduler", "local"]):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", events, "--k", "2", *weights, *where,
                           "--out", tmp_path / "o")
        assert code == 2 and not (tmp_path / "o").exists()
        said.append(_one_line(err))
    assert said[0] == said[1] and "every event left has weight 0 (event types view, click, cart, purchase)" in said[0]


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


# --- signals --------------------------------------------------------------------------------------

MARKER = "test-marker: stage "

# The CLI with a line on stderr as each stage starts (its spinner does that on a terminal only), so a test
# signals inside a given stage, not into the cluster's start as a fixed sleep did on a loaded machine
# (that test timed out at 90 s once, and once ended on another line); and, with TERM_AT_CLOSE, a SIGTERM
# sent to itself as the LocalCluster starts to close.
WRAPPER = textwrap.dedent(f"""
    import contextlib, os, signal, sys
    import gpuclust.cli.app as app

    @contextlib.contextmanager
    def progress(_enabled):
        def stage(name):
            sys.stderr.write({MARKER!r} + name + "\\n")
            sys.stderr.flush()
        yield stage

    app.progress = progress
    if os.environ.get("INT_AT_SPAWN"):  # Ctrl-C to the group while the first worker process imports
        import threading
        from multiprocessing import popen_spawn_posix
        launch = popen_spawn_posix.Popen._launch

        def launching(self, *args, **kwargs):
            launch(self, *args, **kwargs)
            if os.environ.pop("INT_AT_SPAWN", None):
                delay = float(os.environ["INT_DELAY"])
                threading.Timer(delay, os.killpg, (os.getpgid(0), signal.SIGINT)).start()

        popen_spawn_posix.Popen._launch = launching
    if os.environ.get("TERM_AT_CLOSE"):
        from distributed import LocalCluster
        close = LocalCluster.close

        def closing(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return close(self, *args, **kwargs)

        LocalCluster.close = closing
    try:
        app.main()
    finally:
        app.quiet_teardown()
""")


def _alive(pids: list[int]) -> list[int]:
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _workers(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)
                if any("spawn_main" in part for part in p.cmdline())]
    except psutil.Error:
        return []


def _start(tmp_path: Path, events: Path, out: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env_extra}
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "run", "--events", str(events), "--k", "4",
                             "--scheduler", "local", "--workers", "2", "--out", str(out)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def _finish(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:  # a failed check must not leave the run going
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.5)  # the reader thread drains the pipe


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from gpuclust.synth import SynthSpec, write

    folder = tmp_path_factory.mktemp("signals")
    write(SynthSpec(n_users=20_000, n_items=2000, n_groups=4, events_per_user=30.0), folder)
    return folder / "events.parquet"


def _wait_for(proc: subprocess.Popen, lines: list[str], stage: str, limit: float = 240) -> list[int]:
    """Wait (bounded: a loaded machine starts a cluster slowly) until `stage` starts; the workers then."""
    deadline = time.time() + limit
    while time.time() < deadline and MARKER + stage not in lines and proc.poll() is None:
        time.sleep(0.1)
    assert MARKER + stage in lines, f"stage {stage} did not start: {proc.poll()} {lines[-5:]}"
    return _workers(proc.pid)


@pytest.mark.parametrize("sig, code, word, stage", [
    (signal.SIGINT, 130, "interrupted", "preprocess"),
    (signal.SIGTERM, 143, "terminated", "cluster"),
    (signal.SIGINT, 130, "interrupted", "explain"),
])
def test_ctrl_c_closes_the_local_cluster_and_leaves_nothing(tmp_path, dataset, sig, code, word, stage):
    """Ctrl-C in a terminal reaches the whole process group (SIGTERM from a supervisor likewise): the run
    stops with one line, and no asyncio 'Task exception was never retrieved' before it, exit 130 (143),
    no output or staging folder, and no worker process outlives it."""
    out = tmp_path / "run"
    proc, lines = _start(tmp_path, dataset, out, {})
    try:
        workers = _wait_for(proc, lines, stage)
        time.sleep(0.5)  # into the stage's gathers
        os.killpg(proc.pid, sig)
    finally:
        _finish(proc, 90)
    assert proc.returncode == code, lines
    said = [line for line in lines if not line.startswith(MARKER)]
    assert said == [f"{word}: stopped; nothing was written"], "\n".join(lines[:40])
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "gpuclust" in p.name]
    assert len(workers) == 2 and not _alive(workers), f"worker processes left behind: {_alive(workers)}"


def test_sigterm_as_the_local_cluster_closes_does_not_hang(tmp_path, dataset):
    """3 of 7 late SIGTERMs once hung here with the staging folder left: the close is bounded, the signal
    held until the workers are gone, then the run stops with nothing written."""
    out = tmp_path / "run"
    proc, lines = _start(tmp_path, dataset, out, {"TERM_AT_CLOSE": "1"})
    try:
        workers = _wait_for(proc, lines, "preprocess")
    finally:
        _finish(proc, 240)
    assert proc.returncode == 143, lines
    said = [line for line in lines if not line.startswith(MARKER)]
    assert said == ["terminated: stopped; nothing was written"], "\n".join(lines[:40])
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "gpuclust" in p.name]
    assert not _alive(workers), f"worker processes left behind: {_alive(workers)}"


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_ctrl_c_while_the_workers_start_is_one_line_without_their_tracebacks(tmp_path, dataset, delay):
    """A Ctrl-C that reached worker processes still importing printed their KeyboardInterrupt tracebacks
    (54-112 lines) around the one line, and the half-started cluster's close at exit one more."""
    out = tmp_path / "run"
    proc, lines = _start(tmp_path, dataset, out, {"INT_AT_SPAWN": "1", "INT_DELAY": str(delay)})
    _finish(proc, 240)
    assert proc.returncode == 130, lines
    said = [line for line in lines if not line.startswith(MARKER)]
    assert said == ["interrupted: stopped; nothing was written"], "\n".join(lines[:60])
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "gpuclust" in p.name]


def test_a_failure_after_a_signal_is_reported_as_the_stop():
    """SIGTERM to the process group killed the workers and its KeyboardInterrupt was swallowed in a GC
    callback inside Dask: the run then failed with a 'lost dependencies' traceback and exit 1."""
    from gpuclust.distributed.cluster import _failures_after_a_signal
    from gpuclust.errors import Interrupted

    with pytest.raises(Interrupted) as stopped, _failures_after_a_signal([signal.SIGTERM]):
        raise RuntimeError("_take-1 cancelled for reason: lost dependencies")
    assert stopped.value.signum == signal.SIGTERM
    with pytest.raises(RuntimeError), _failures_after_a_signal([]):  # no signal: a failure stays a failure
        raise RuntimeError("a bug")


def test_asyncio_reports_of_dask_tasks_are_filtered_and_others_kept():
    import logging

    from gpuclust.distributed.cluster import _NOISE

    try:
        from distributed.core import Server  # noqa: F401 - any frame inside distributed's files will do
        exec(compile("raise RuntimeError('Nanny failed to start.')", distributed.core.__file__, "exec"))
    except RuntimeError as exc:
        inside = exc
    record = logging.LogRecord("asyncio", logging.ERROR, "", 0, "Task exception was never retrieved\nfuture: x",
                               None, (RuntimeError, inside, inside.__traceback__))
    assert not _NOISE.filter(record)
    mine = logging.LogRecord("asyncio", logging.ERROR, "", 0, "Task exception was never retrieved", None,
                             (ValueError, ValueError("ours"), None))
    assert _NOISE.filter(mine)
    assert _NOISE.filter(logging.LogRecord("asyncio", logging.ERROR, "", 0, "something else", None, None))


def test_partitions_are_capped_by_a_running_clusters_threads_too():
    from gpuclust.distributed.engine import partition_count

    assert partition_count(10**6, 4, 128) == 128
    with pytest.raises(UsageError, match="129 is more than 32 per worker thread"):
        partition_count(10**6, 4, 129)


def test_a_signal_whose_exception_was_swallowed_still_stops_the_run():
    """A SIGTERM noted while the session runs, its exception lost where Python ignores exceptions (a GC
    callback inside Dask), and nothing failing afterwards: the session still ends in Interrupted."""
    from gpuclust.distributed.cluster import _failures_after_a_signal, _signals_noted
    from gpuclust.errors import Interrupted

    def terminate(signum, _frame):
        raise Interrupted(signum)

    before = signal.signal(signal.SIGTERM, terminate)  # the CLI's handler
    try:
        received: list[int] = []
        with (pytest.raises(Interrupted) as stopped, _signals_noted(received), _failures_after_a_signal(received),
              contextlib.suppress(BaseException)):  # the signal's exception swallowed, as a GC callback would
            signal.raise_signal(signal.SIGTERM)
        assert stopped.value.signum == signal.SIGTERM and received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_signal_swallowed_in_a_finalizer_prints_no_exception_ignored(monkeypatch):
    """SIGTERM in the cluster stage once printed "Exception ignored in ..." and a traceback before the run's
    one line: its exception was raised inside a finalizer, which Python cannot propagate. The stop is
    noted, so that report is dropped; an unraisable exception of another kind is still reported."""
    import gc

    from gpuclust.distributed.cluster import _failures_after_a_signal, _signals_noted
    from gpuclust.errors import Interrupted

    reported: list[BaseException] = []

    def report(info):  # stands for Python's default hook, which prints "Exception ignored in ..."
        reported.append(info.exc_value)

    monkeypatch.setattr(sys, "unraisablehook", report)

    def terminate(signum, _frame):
        raise Interrupted(signum)

    class SignalledWhileCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside the finalizer

    class Broken:
        def __del__(self):
            raise ValueError("a real fault in a finalizer")

    before = signal.signal(signal.SIGTERM, terminate)
    try:
        received: list[int] = []
        with pytest.raises(Interrupted), _signals_noted(received), _failures_after_a_signal(received):
            SignalledWhileCollected()
            gc.collect()
            Broken()
            gc.collect()
        assert received == [signal.SIGTERM]
        assert [type(exc) for exc in reported] == [ValueError], reported
        assert sys.unraisablehook is report  # put back as it was
    finally:
        signal.signal(signal.SIGTERM, before)
