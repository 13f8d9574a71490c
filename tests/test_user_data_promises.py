"""The promises that protect users' data on the newer surfaces (issue 18, "fix first"): pseudonymisation is
never dropped on Dask, a file output never lands on an input or another command's output, a swap
interrupted between its renames loses nothing, and a folder removed mid-run is not passed off as output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import blob_events, cli

from gpuclust import PipelineConfig
from gpuclust.errors import UsageError
from gpuclust.io.outputs import MARKER, OutputDir, check_file_target, written_as
from gpuclust.run import RUN_LAYOUT, run_files

KEY = "k3y-for-the-dask-privacy-test-0123456789"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Events, items and a finished run on them."""
    root = tmp_path_factory.mktemp("promises")
    events, items, truth = blob_events(n_users=150)
    for name, frame in (("events", events), ("items", items), ("truth", truth)):
        frame.to_parquet(root / f"{name}.parquet")
    config = PipelineConfig(device="cpu")
    config.cluster.k = 3
    config.cluster.n_init = 1
    run_files(config, root / "events.parquet", root / "run", items=root / "items.parquet")
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. pseudonymisation on Dask ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["flag", "toml"])
def test_pseudonymise_with_a_dask_scheduler_is_refused_before_anything_is_written(finished, tmp_path, monkeypatch,
                                                                                 capsys, how):
    key = tmp_path / "key"
    key.write_text(KEY)
    extra = ["--scheduler", "local"]
    if how == "toml":
        toml = tmp_path / "run.toml"
        toml.write_text('[dask]\nscheduler = "local"\n')
        extra = ["--config", toml]
    out = tmp_path / "out"
    code, _, err = cli(monkeypatch, capsys, "run", "--events", finished / "events.parquet", "--k", "3",
                       "--device", "cpu", "--out", out, "--pseudonymise", key, *extra)
    assert code == 2 and err.count("\n") == 1 and "--pseudonymise" in err and "Dask" in err, err
    assert not out.exists()


def test_run_files_refuses_a_key_with_a_scheduler():
    config = PipelineConfig(device="cpu")
    config.dask.scheduler = "local"
    with pytest.raises(UsageError, match="Dask"):
        run_files(config, "nowhere.parquet", "nowhere", pseudonymise=KEY.encode())


# --- 2. file outputs never over inputs or other outputs -------------------------------------------

def test_report_out_never_replaces_an_input_or_a_run_file(finished, tmp_path, monkeypatch, capsys):
    before = _snapshot(finished)
    for target in (finished / "events.parquet", finished / "run" / "manifest.json",
                   finished / "run" / "clusters.json", finished / "run" / "elsewhere.html"):
        code, _, err = cli(monkeypatch, capsys, "report", "--run", finished / "run", "--out", target)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (target, err)
    assert _snapshot(finished) == before
    # its own file, twice: a rerun replaces what the first wrote
    page = tmp_path / "page.html"
    for _ in range(2):
        code, _, err = cli(monkeypatch, capsys, "report", "--run", finished / "run", "--out", page)
        assert code == 0, err
    assert written_as(page) == "report"


def test_drift_and_evaluate_replace_only_their_own_kind_of_file(finished, tmp_path, monkeypatch, capsys):
    users_json = tmp_path / "mine.json"
    users_json.write_text(json.dumps({"gpuclust": "my notes about the tool", "keep": True}))
    run_manifest = finished / "run" / "manifest.json"
    protected = {p: p.read_bytes() for p in (users_json, run_manifest)}
    drift = ("drift", "--model", finished / "run" / "model", "--events", finished / "events.parquet")
    for target in (users_json, run_manifest, tmp_path / "drift.txt"):
        code, _, err = cli(monkeypatch, capsys, *drift, "--out", target)
        assert code == 2 and err.count("\n") == 1 and "--out" in err, (target, err)
    ok = tmp_path / "drift.json"
    for _ in range(2):
        code, _, err = cli(monkeypatch, capsys, *drift, "--out", ok)
        assert code in (0, 1), err
    assert written_as(ok) == "drift"
    # evaluate may not take drift's file, nor the run's manifest, nor the user's JSON
    for target in (ok, users_json, run_manifest):
        code, _, err = cli(monkeypatch, capsys, "evaluate", "--events", finished / "events.parquet", "--k", "3",
                           "--device", "cpu", "--out", target)
        assert code == 2 and err.count("\n") == 1, (target, err)
    assert {p: p.read_bytes() for p in protected} == protected


def test_a_top_level_gpuclust_key_is_not_the_mark(tmp_path):
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps({"gpuclust": "0.1.0"}))
    assert written_as(doc) is None
    with pytest.raises(UsageError, match="did not write"):
        check_file_target(doc, "--out", kind="drift", suffixes=(".json",))


# --- 3. a swap interrupted between its renames ----------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_set_moved_aside_by_a_killed_swap_is_restored_before_any_sweep(tmp_path):
    """The fallback swap (two renames) killed between them: the old set lies at its -old name and no
    target exists. The next command puts it back, even when that command then fails."""
    target = tmp_path / "out"
    with OutputDir(target, "run", RUN_LAYOUT) as staging:
        (staging / "manifest.json").write_text('{"gpuclust": "old"}')
    old = _snapshot(target)
    aside = tmp_path / f".out.gpuclust-{_dead_pid()}-0123abcd-old"
    os.rename(target, aside)
    with pytest.raises(UsageError), OutputDir(target, "assign", {"manifest.json": None}):
        pass  # another kind of output: refused, but only after the run's set is back
    assert _snapshot(target) == old and not aside.exists()


def test_the_swap_is_one_step_where_the_system_has_it(tmp_path, monkeypatch):
    """With renameat2(RENAME_EXCHANGE), os.rename never runs while a target exists: no moment without one."""
    from gpuclust.io import outputs

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    if not outputs._exchange(a, b):
        pytest.skip("this file system has no RENAME_EXCHANGE; the fallback is covered above")
    assert (b / "x").read_text() == "a"
    target = tmp_path / "out"
    with OutputDir(target, "run", RUN_LAYOUT) as staging:
        (staging / "manifest.json").write_text("1")
    renames = []
    real = os.rename
    monkeypatch.setattr(outputs.os, "rename", lambda s, d: (renames.append((s, d)), real(s, d)))
    with OutputDir(target, "run", RUN_LAYOUT) as staging:
        (staging / "manifest.json").write_text("2")
    assert renames == [] and (target / "manifest.json").read_text() == "2"


def test_a_kill_during_the_swap_never_leaves_the_target_missing(tmp_path):
    """SIGKILL at random moments of repeated swaps: afterwards the target holds one whole set, old or new."""
    script = textwrap.dedent(f"""
        import sys
        from gpuclust.io.outputs import OutputDir
        from gpuclust.run import RUN_LAYOUT
        n = 0
        while True:
            n += 1
            with OutputDir({str(tmp_path / 'out')!r}, "run", RUN_LAYOUT) as staging:
                (staging / "manifest.json").write_text(str(n))
                (staging / "clusters.json").write_text(str(n))
            if n == 1:
                print("ready", flush=True)
    """)
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        import time

        time.sleep(0.05 * (attempt + 1))
        proc.kill()
        proc.wait()
        with pytest.raises(RuntimeError), OutputDir(tmp_path / "out", "run", RUN_LAYOUT):
            raise RuntimeError  # the next command restores or sweeps, then fails: nothing of its own lands
        out = tmp_path / "out"
        assert out.is_dir() and (out / MARKER).is_file()
        assert (out / "manifest.json").read_text() == (out / "clusters.json").read_text()


# --- 4. folders removed mid-run, and the demo's folder --------------------------------------------

def test_an_output_parent_removed_mid_run_is_an_error_not_an_unmarked_output(tmp_path):
    import shutil

    parent = tmp_path / "parent"
    with pytest.raises(UsageError, match="removed or replaced"), OutputDir(parent / "out", "run", RUN_LAYOUT) as staging:
        shutil.rmtree(parent)
        staging.mkdir(parents=True)  # what a writer's mkdir(parents=True) did
        (staging / "manifest.json").write_text("{}")
    assert not (parent / "out").exists()


def test_demo_never_mixes_its_sets_into_a_users_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "gpuclust-demo"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    code, _, err = cli(monkeypatch, capsys, "demo", "--out", folder, "--users", "200", "--groups", "2",
                       "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "notes.txt" in err, err
    assert sorted(os.listdir(folder)) == ["notes.txt"]
