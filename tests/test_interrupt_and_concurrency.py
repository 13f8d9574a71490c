"""A run that is interrupted, or that races another run to the same --out, never leaves a mixed or partial
output set: Ctrl-C (SIGINT) at any point exits 130 with one line and leaves --out exactly as it was; two
concurrent runs to one folder end with one complete, self-consistent output set.

These start real `gpuclust` processes (the console entry point, from this source tree), so they take a few
seconds each.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.contract import MARKER, check_run_outputs, snapshot, tree_changes

ROOT = Path(__file__).resolve().parents[1]
INTERRUPT_USERS = 10_000
CONCURRENT_USERS = 3_000
DELAYS = 6
EXIT_TIMEOUT_S = 180


def gpuclust(*args, **popen) -> subprocess.Popen:
    """Start `gpuclust ARGS` from this source tree in its own process group, as a shell starts a job."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpuclust.cli.app", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **popen)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"gpuclust did not exit within {EXIT_TIMEOUT_S} s (hang)")
    return proc.returncode, stdout, stderr


def one_line(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def synth(out: Path, users: int) -> Path:
    code, _, stderr = finish(gpuclust("synth", "--users", users, "--items", 2000, "--groups", 6, "--out", out))
    assert code == 0, stderr
    return out


# --- Ctrl-C ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict:
    """A dataset whose run takes a few seconds, one complete run of it, and how long that run took."""
    base = tmp_path_factory.mktemp("interrupt")
    data = synth(base / "data", INTERRUPT_USERS)
    previous = base / "previous"
    started = time.monotonic()
    code, _, stderr = finish(gpuclust(*run_args(data, previous, k=6)))
    assert code == 0, stderr
    return {"data": data, "previous": previous, "seconds": time.monotonic() - started, "base": base}


def run_args(data: Path, out: Path, k: int, seed: int = 0) -> list:
    return ["run", "--events", data / "events.parquet", "--items", data / "items.parquet", "--k", k,
            "--seed", seed, "--device", "cpu", "--out", out]


def interrupt_delays(seconds: float) -> list[float]:
    """Seeded delays spread over a whole run, from start-up to the final writes."""
    rng = np.random.default_rng(13)
    return sorted(float(f) * seconds for f in rng.uniform(0.02, 0.98, DELAYS))


@pytest.mark.slow
@pytest.mark.parametrize("which", range(DELAYS))
def test_ctrl_c_at_any_point_exits_130_and_leaves_out_as_it_was(big, tmp_path, which):
    delay = interrupt_delays(big["seconds"])[which]
    out = tmp_path / "out"
    had_previous = which % 2 == 1  # every other delay interrupts a rerun into a finished run's folder
    if had_previous:
        shutil.copytree(big["previous"], out)
    before = snapshot(out)
    proc = gpuclust(*run_args(big["data"], out, k=4, seed=1))
    time.sleep(delay)  # deliberate: the point in the run where Ctrl-C lands
    os.killpg(proc.pid, signal.SIGINT)
    code, _, stderr = finish(proc)
    where = f"SIGINT after {delay:.2f} s of a {big['seconds']:.1f} s run"
    assert "Traceback" not in stderr, f"{where}: traceback:\n{stderr[-1500:]}"
    if code == 0:  # only if the run finished before the signal landed: then it wrote its own complete set
        assert out.is_dir(), f"{where}: exit 0, but no output set was written (was Ctrl-C ignored?)"
        manifest = check_run_outputs(out)
        assert manifest["config"]["cluster"]["k"] == 4, f"{where}: exit 0, but --out holds the previous run"
        return
    assert code == 130, f"{where}: exit code {code}, stderr {stderr[-500:]!r}"
    assert len(one_line(stderr)) == 1, f"{where}: stderr is not one line: {stderr[-500:]!r}"
    if "written in full" in stderr:  # the stop landed after the commit, while the summary was printed
        assert_stopped_after_the_commit(out, stderr)
        return
    assert "nothing was written" in stderr, f"{where}: {stderr!r}"
    changes = tree_changes(before, snapshot(out))
    assert not any(changes.values()), f"{where}: --out {'held a run' if had_previous else 'was absent'}; {changes}"


def assert_stopped_after_the_commit(out: Path, stderr: str) -> None:
    assert one_line(stderr) == [f"interrupted: stopped; {out} was written in full before the stop, nothing after"]
    manifest = check_run_outputs(out)
    assert manifest["config"]["cluster"]["k"] == 4, "the line says --out was written, but it holds the previous run"


SUMMARY_THEN_CTRL_C = """
import os, signal, sys
import gpuclust.cli.app as app

summary = app.report
def ctrl_c_during_the_summary(*args, **kwargs):  # the outputs are committed by now
    os.kill(os.getpid(), signal.SIGINT)
    summary(*args, **kwargs)

app.report = ctrl_c_during_the_summary
sys.argv = ["gpuclust", *sys.argv[1:]]
app.main()
"""


@pytest.mark.parametrize("had_previous", [False, True])
def test_ctrl_c_after_the_commit_names_the_complete_output_set(small, small_previous, tmp_path, had_previous):
    """The stop lands after the swap: the line must not say 'nothing was written' beside a complete set."""
    out = tmp_path / "out"
    if had_previous:
        shutil.copytree(small_previous, out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SUMMARY_THEN_CTRL_C, *map(str, run_args(small, out, k=4))],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, _, stderr = finish(proc)
    assert code == 130, stderr[-1500:]
    assert_stopped_after_the_commit(out, stderr)


# --- two runs, one --out --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return synth(tmp_path_factory.mktemp("concurrent") / "data", CONCURRENT_USERS)


@pytest.fixture(scope="module")
def small_previous(small) -> Path:
    """One finished run (k = 2) of `small`, made once: a test that needs --out to hold a previous run copies it
    there (as the Ctrl-C tests copy big's), where each made the same run again."""
    previous = small.parent / "previous"
    code, _, stderr = finish(gpuclust(*run_args(small, previous, k=2)))
    assert code == 0, stderr
    return previous


@pytest.mark.slow
@pytest.mark.parametrize("repeat", range(3))
@pytest.mark.parametrize("out_state", ["absent", "a previous run"])
def test_two_concurrent_runs_to_one_out_leave_one_complete_output_set(small, small_previous, tmp_path, repeat,
                                                                      out_state):
    out = tmp_path / "out"
    if out_state == "a previous run":
        shutil.copytree(small_previous, out)
    runs = [gpuclust(*run_args(small, out, k=3, seed=repeat)), gpuclust(*run_args(small, out, k=5, seed=repeat))]
    results = [finish(p) for p in runs]
    for code, _, stderr in results:
        assert "Traceback" not in stderr, stderr[-1500:]
        assert code in (0, 2), f"exit code {code}: {stderr[-500:]!r}"
        if code == 2:
            assert len(one_line(stderr)) == 1, stderr
    assert any(code == 0 for code, _, _ in results), f"both runs refused: {[r[2] for r in results]}"
    manifest = check_run_outputs(out)
    winners = {3, 5} if all(code == 0 for code, _, _ in results) else {(3, 5)[[r[0] for r in results].index(0)]}
    assert manifest["config"]["cluster"]["k"] in winners, "the output set is not from a run that succeeded"
    assert manifest["cluster"]["k"] == manifest["config"]["cluster"]["k"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER], "staging left behind"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == [], "staging left beside"
