"""Faults and odd paths give one line and exit 2, and leave earlier outputs as they were: a full disk or
`ulimit -f`, names of 250-256 bytes and paths of 4,200, special files given as key or token files, a run
folder whose manifest is some other JSON, and `bench`/`size` options that cannot work."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import blob_events, cli

from gpuclust.errors import UsageError, require_file, write_failure
from gpuclust.io.outputs import OutputDir

ROOT = Path(__file__).resolve().parents[1]
LIMITED = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["gpuclust", *sys.argv[2:]]
from gpuclust.cli.entry import main
main()
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Events, and a finished run of them."""
    root = tmp_path_factory.mktemp("faults")
    events, _, _ = blob_events(n_users=60, n_groups=2, events_per_user=8)
    events.to_parquet(root / "events.parquet")
    proc = _gpuclust(None, "run", "--events", root / "events.parquet", "--k", 2, "--out", root / "run")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "events": root / "events.parquet", "run": root / "run"}


def _gpuclust(limit: int | None, *args) -> subprocess.CompletedProcess:
    """`gpuclust ARGS` in a child process, under a file size limit of `limit` bytes (ulimit -f)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if limit is None:
        command = [sys.executable, "-m", "gpuclust", *map(str, args)]
    else:
        command = [sys.executable, "-c", LIMITED, str(limit), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr


# --- a full disk and ulimit -f ------------------------------------------------------------------

def test_a_run_past_the_file_size_limit_is_one_line_and_keeps_the_old_run(world):
    before = _snapshot(world["run"])
    proc = _gpuclust(20_000, "run", "--events", world["events"], "--k", 3, "--out", world["run"])
    _one_line(proc, f"--out {world['run']}", "ulimit -f")
    assert _snapshot(world["run"]) == before  # the old set, model included, untouched
    assert not [p for p in world["root"].iterdir() if p.name.startswith(".gpuclust-")]


@pytest.mark.parametrize("command", [
    lambda w: ["synth", "--users", 300, "--items", 100, "--groups", 3, "--out", w["root"] / "synth"],
    lambda w: ["report", "--run", w["run"], "--out", w["root"] / "report.html"],
    lambda w: ["drift", "--model", w["run"] / "model", "--events", w["events"], "--out", w["root"] / "drift.json"],
])
def test_other_commands_past_the_file_size_limit_are_one_line(world, command):
    args = command(world)
    before = _snapshot(world["root"])
    proc = _gpuclust(200, *args)
    _one_line(proc, "file size limit", "ulimit -f")
    assert _snapshot(world["root"]) == before


def test_a_write_of_any_single_file_output_is_one_line_on_a_full_disk(tmp_path):
    """What evaluate --out, embed, report and drift write goes through atomic_path: under a limit the
    file there stays as it was and the error names it."""
    target = tmp_path / "result.json"
    target.write_text('{"old": true}\n')
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
            "from gpuclust.io.writers import write_json\nfrom gpuclust.errors import UsageError\n"
            "try:\n    write_json(sys.argv[1], {'x': 'y' * 1000})\n"
            "except UsageError as exc:\n    print(exc)\n    sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 2 and f"output file {target}" in proc.stdout and "ulimit -f" in proc.stdout
    assert target.read_text() == '{"old": true}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_no_space_left_is_named_with_the_room_there(tmp_path):
    import errno

    failure = write_failure(OSError(errno.ENOSPC, "No space left on device"), "--out", tmp_path / "out")
    assert isinstance(failure, UsageError)
    assert f"--out {tmp_path / 'out'}: the disk is full (" in str(failure) and "MiB free there" in str(failure)
    assert write_failure(OSError(errno.EACCES, "Permission denied"), "--out", tmp_path) is None


def test_a_full_tmpfs_gives_one_line_and_keeps_the_old_run(world, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        proc = _gpuclust(None, "run", "--events", world["events"], "--k", 2, "--out", small / "run")
        assert proc.returncode == 0, proc.stderr
        before = _snapshot(small / "run")
        with open(small / "fill", "wb") as fh:  # fill what is left
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
        proc = _gpuclust(None, "run", "--events", world["events"], "--k", 3, "--out", small / "run")
        _one_line(proc, f"--out {small / 'run'}", "the disk is full")
        assert _snapshot(small / "run") == before
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


# --- long names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [250, 255])
def test_a_valid_long_out_name_works_and_can_be_replaced(world, tmp_path, monkeypatch, capsys, length):
    """In this process (a run in a child process is `world`'s and the file size tests'): the names are the point."""
    out = tmp_path / ("n" * length)
    for k in (2, 3):
        code, _, err = cli(monkeypatch, capsys, "run", "--events", world["events"], "--k", k, "--out", out)
        assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["cluster"]["k"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no staging left beside it


@pytest.mark.parametrize("flag, path", [
    ("--out", lambda tmp: tmp / ("n" * 256)),
    ("--out", lambda tmp: tmp.joinpath(*["d" * 200] * 21)),
    ("--events", lambda tmp: tmp / ("e" * 256)),
    ("--events", lambda tmp: tmp.joinpath(*["d" * 200] * 21)),
])
def test_an_impossible_name_or_path_is_one_line(world, tmp_path, monkeypatch, capsys, flag, path):
    args = {"--events": world["events"], "--out": tmp_path / "out", flag: path(tmp_path)}
    code, _, err = cli(monkeypatch, capsys, "run", "--k", 2, *[x for pair in args.items() for x in pair])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "255" in err or "4,095" in err
    assert list(tmp_path.iterdir()) == []


def test_the_single_file_outputs_take_long_names_too(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / ("r" * 250 + ".html")
    code, _, err = cli(monkeypatch, capsys, "report", "--run", world["run"], "--out", out)
    assert code == 0, err
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def test_short_staging_names_are_swept_and_restored_for_their_own_target_only(tmp_path):
    layout = {"a.txt": None}
    target = tmp_path / ("t" * 255)
    with OutputDir(target, "demo-kind", layout) as staging:
        (staging / "a.txt").write_text("old")
    dead = _dead_pid()
    # A set moved aside by a killed two-rename swap, then no target: restored before anything else.
    aside = tmp_path / f".gpuclust-{_hash(target.name)}-{dead}-0123abcd-old"
    os.rename(target, aside)
    stale = tmp_path / f".gpuclust-{_hash(target.name)}-{dead}-89abcdef"  # a killed command's staging
    stale.mkdir()
    other = tmp_path / f".gpuclust-{_hash('another')}-{dead}-89abcdef"  # another target's: not ours to touch
    other.mkdir()
    with OutputDir(target, "demo-kind", layout) as staging:
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other.name])


# --- special files, other JSON, bench and size ------------------------------------------------

@pytest.mark.parametrize("special, words", [
    ("fifo", "a named pipe (FIFO)"), ("/dev/null", "a character device"), ("/dev/urandom", "a character device"),
])
def test_a_special_file_as_a_key_or_token_file_is_named_for_what_it_is(tmp_path, special, words):
    from gpuclust.privacy import Pseudonymiser
    from gpuclust.serve.app import read_token

    path = Path(special)
    if special == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)  # never opened: nothing waits for a writer
    with pytest.raises(UsageError, match=rf"is {words.replace('(', '[(]').replace(')', '[)]')}.*not a key file"):
        Pseudonymiser.from_file(path)
    with pytest.raises(UsageError, match="not a token file"):
        read_token(path)
    with pytest.raises(UsageError, match="file not found"):
        require_file(tmp_path / "missing", "a key file")


def test_a_key_fifo_on_the_command_line_does_not_hang(world, tmp_path):
    os.mkfifo(tmp_path / "key")
    proc = _gpuclust(None, "assign", "--model", world["run"] / "model", "--events", world["events"], "--out",
                     tmp_path / "out", "--pseudonymise", tmp_path / "key")
    _one_line(proc, "named pipe")


@pytest.mark.parametrize("manifest, words", [
    ('{"gpuclust_output": {"kind": "drift", "id": "0"}, "rows": []}', "a gpuclust drift result"),
    ('{"rows": [1, 2], "alert": false}', "'rows' is not an object"),
    ('{"timings": {"stages": [1]}}', "'timings.stages' is not an object"),
    ("[1, 2]", "a JSON list"),
])
def test_report_on_a_folder_whose_manifest_is_other_json(world, tmp_path, monkeypatch, capsys, manifest, words):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    (run / "manifest.json").write_text(manifest)
    code, _, err = cli(monkeypatch, capsys, "report", "--run", run)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err and "not a run manifest" in err
    assert not (run / "report.html").exists()


def test_bench_out_on_an_existing_file_fails_before_any_work(tmp_path, monkeypatch, capsys):
    import time

    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    started = time.perf_counter()
    code, _, err = cli(monkeypatch, capsys, "bench", "--suite", "stages", "--out", existing)
    assert code == 2 and "is a file" in err and time.perf_counter() - started < 10
    assert existing.read_text() == "mine"
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "x.json").write_text("[1]")
    code, _, err = cli(monkeypatch, capsys, "bench", "--suite", "stages", "--out", tmp_path / "res", "--name", "x")
    assert code == 2 and "not a benchmark results JSON" in err


@pytest.mark.parametrize("args, words", [
    (["--events-per-user", "nan"], "--events-per-user a number above 0"),
    (["--events-per-user", "1e308"], "--events-per-user a number above 0"),
    (["--events-per-user", "inf"], "--events-per-user a number above 0"),
    (["--events-per-user", "10", "--workers", "0"], "--workers must be at least 1"),
    (["--events-per-user", "10", "--workers", "-2"], "--workers must be at least 1"),
])
def test_size_refuses_what_it_cannot_predict(monkeypatch, capsys, args, words):
    code, out, err = cli(monkeypatch, capsys, "size", "--users", 1000, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and out == ""


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_size_results_that_are_parquet_is_one_line(world, monkeypatch, capsys, workers):
    code, _, err = cli(monkeypatch, capsys, "size", "--users", 1000, "--events-per-user", 10, "--results",
                       world["events"], *workers)
    assert code == 2 and "not a benchmark results JSON" in err and len(err.strip().splitlines()) == 1

