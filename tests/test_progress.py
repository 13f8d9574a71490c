"""Long work shows progress: one reporter the library tells each step, shown by the CLI as a terminal
spinner or as timestamped lines in a log (`gpuclust.cli.console`); and the blend search that made a
100k-user evaluate silent for 10 minutes is a coarse-to-fine search on a sample."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest

from gpuclust.cli.console import PLAIN_LINE, PlainLines, progress_mode
from gpuclust.errors import UsageError
from gpuclust.recommend.evaluation import search_weight
from tests.helpers import blob_events, cli

GRID = tuple(round(0.1 * i, 1) for i in range(11))


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_plain_lines_are_silent_for_a_quick_command():
    stream = io.StringIO()
    lines = PlainLines(stream, delay=30.0, tick=0.01)
    lines("read")
    lines("preprocess")
    lines.close(ok=True)
    assert stream.getvalue() == ""  # a quick command (or refusal) keeps its stderr to its own words


def test_plain_lines_name_each_step_once_the_command_runs_a_while():
    stream = io.StringIO()
    lines = PlainLines(stream, delay=0.05, every=0.2, tick=0.01)
    lines("read")
    time.sleep(0.15)  # past the delay: the step in progress is written by the watcher, not by the next step
    assert [line.split("  ", 1)[1] for line in _lines(stream)] == ["read"]
    lines("features.tfidf")
    time.sleep(0.35)  # a long step gets a "still running" line
    lines.close(ok=True)
    said = _lines(stream)
    assert all(PLAIN_LINE.match(line) for line in said), said
    texts = [line.split("  ", 1)[1] for line in said]
    assert texts[:2] == ["read", "features.tfidf"]
    assert any(t.startswith("features.tfidf (running ") for t in texts[2:-1]), texts
    assert texts[-1].startswith("done in ")


def test_plain_lines_end_without_a_done_line_when_the_command_failed():
    stream = io.StringIO()
    lines = PlainLines(stream, delay=0.0, tick=0.01)
    lines("cluster")
    time.sleep(0.1)
    lines.close(ok=False)
    after = stream.getvalue()
    time.sleep(0.1)  # the watcher is stopped: nothing may follow the command's error line
    assert stream.getvalue() == after and "done" not in after and "cluster" in after


def test_the_mode_follows_the_terminal_json_and_the_environment(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("GPUCLUST_PROGRESS", raising=False)
    assert progress_mode(False, Tty()) == "rich"
    assert progress_mode(False, io.StringIO()) == "plain"
    assert progress_mode(True, Tty()) == "off" and progress_mode(True, io.StringIO()) == "off"
    monkeypatch.setenv("GPUCLUST_PROGRESS", "plain")
    assert progress_mode(True, Tty()) == "plain"
    monkeypatch.setenv("GPUCLUST_PROGRESS", "loud")
    with pytest.raises(UsageError, match="GPUCLUST_PROGRESS='loud' is not a progress mode"):
        progress_mode(False)


@pytest.fixture()
def files(tmp_path):
    events, items, truth = blob_events(n_users=240, n_groups=3)
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    return tmp_path


def test_a_run_writes_its_stages_to_a_log_and_keeps_json_stdout_clean(monkeypatch, capsys, files):
    import gpuclust.cli.console as console

    monkeypatch.setattr(console, "PLAIN_DELAY_S", 0.0)
    monkeypatch.setenv("GPUCLUST_PROGRESS", "auto")  # stderr is not a terminal here: plain lines
    code, stdout, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--k", 3,
                               "--device", "cpu", "--out", files / "out")
    assert code == 0, stderr
    steps = [line.split("  ", 1)[1] for line in stderr.splitlines() if PLAIN_LINE.match(line)]
    for stage in ("read", "preprocess", "features.tfidf", "cluster", "explain", "recommend", "write"):
        assert stage in steps, steps
    assert steps[-1].startswith("done in ") and "clusters of 240 users" in stdout
    code, stdout, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--k", 3,
                               "--device", "cpu", "--out", files / "again", "--json")
    assert code == 0 and stderr == "" and json.loads(stdout)["cluster"]["k"] == 3


def test_evaluate_names_its_steps_and_tunes_the_blend_on_fewer_weights(monkeypatch, capsys, files):
    import gpuclust.cli.console as console

    monkeypatch.setattr(console, "PLAIN_DELAY_S", 0.0)
    monkeypatch.setenv("GPUCLUST_PROGRESS", "plain")
    code, stdout, stderr = cli(monkeypatch, capsys, "evaluate", "--events", files / "events.parquet", "--k", 3,
                               "--device", "cpu", "--json")
    assert code == 0, stderr
    steps = [line.split("  ", 1)[1] for line in stderr.splitlines() if PLAIN_LINE.match(line)]
    assert {"read", "validation fit: cluster", "test fit: cluster", "personal model"} <= set(steps), steps
    tuned = [s for s in steps if s.startswith("tuning the blend weight")]
    result = json.loads(stdout)
    grid = result["validation"]["grid"]
    assert 3 <= len(tuned) == len(grid) < len(GRID)
    best = max(grid, key=lambda r: (r["HR@10"], r["NDCG@10"], -r["w"]))
    assert result["validation"]["chosen_weight"] == best["w"]


@pytest.mark.parametrize("peak", range(11))
def test_the_coarse_to_fine_search_finds_the_peak_of_a_single_peaked_curve(peak):
    calls = []

    def score(w: float) -> dict:
        calls.append(w)
        hr = 0.5 - abs(w - GRID[peak]) * (0.3 if w < GRID[peak] else 0.1)
        return {"w": w, "HR@10": hr, "NDCG@10": hr / 2}

    rows = search_weight(score, GRID, 10)
    assert max(rows, key=lambda r: r["HR@10"])["w"] == GRID[peak]
    assert len(calls) == len(set(calls)) <= 8 and [r["w"] for r in rows] == sorted(calls)


def test_the_search_keeps_the_smaller_weight_on_a_flat_curve():
    rows = search_weight(lambda w: {"w": w, "HR@10": 0.2, "NDCG@10": 0.1}, GRID, 10)
    assert max(rows, key=lambda r: (r["HR@10"], r["NDCG@10"], -r["w"]))["w"] == 0.0


def test_tuning_users_are_a_seeded_sample():
    from gpuclust.backend import resolve_backend
    from gpuclust.recommend.evaluation import _sample

    backend = resolve_backend("cpu")
    users = np.arange(100, 1100)
    a = _sample(users, users * 2, users % 7, 300, 0, backend)
    b = _sample(users, users * 2, users % 7, 300, 0, backend)
    assert len(a[0]) == 300 and np.array_equal(a[0], b[0]) and np.array_equal(a[1], a[0] * 2)
    assert np.all(np.diff(a[0]) > 0)  # in their order
    assert _sample(users, users, users, None, 0, backend)[0] is users
