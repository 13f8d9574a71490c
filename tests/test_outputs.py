"""Output folders: never over the user's files, replaced as one unit, nothing left by a failure."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from gpuclust.errors import Interrupted, UsageError
from gpuclust.io.outputs import MARKER, OutputDir, check_file_target
from tests.helpers import blob_events, cli

LAYOUT = {"a.txt": None, "b.txt": None, "sub": frozenset({"c.txt"})}


def write_set(target: Path, tag: str, names=("a.txt", "b.txt")) -> None:
    with OutputDir(target, "test", LAYOUT) as staging:
        for name in names:
            (staging / name).write_text(tag)


def test_a_folder_of_user_files_is_refused_and_left_intact(tmp_path):
    target = tmp_path / "out"
    (target / "model").mkdir(parents=True)
    (target / "model" / "notes.txt").write_text("mine")
    (target / "data.csv").write_text("x")
    with pytest.raises(UsageError, match="did not write"):
        write_set(target, "new")
    assert (target / "model" / "notes.txt").read_text() == "mine" and (target / "data.csv").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_user_file_added_to_an_output_folder_makes_it_foreign(tmp_path):
    target = tmp_path / "out"
    write_set(target, "old")
    (target / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="mine.txt"):
        write_set(target, "new")
    (target / "mine.txt").unlink()
    (target / "sub").mkdir()
    (target / "sub" / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="sub/notes.txt"):
        write_set(target, "new")
    assert (target / "sub" / "notes.txt").read_text() == "keep"


def test_another_kind_of_gpuclust_output_is_not_replaced(tmp_path):
    target = tmp_path / "data"
    with OutputDir(target, "synth", {"events.parquet": None}) as staging:
        (staging / "events.parquet").write_text("events")
    with pytest.raises(UsageError, match="synth output"):
        write_set(target, "new")
    assert (target / "events.parquet").read_text() == "events"


def test_a_rerun_replaces_the_whole_set(tmp_path):
    target = tmp_path / "out"
    write_set(target, "old", names=("a.txt", "b.txt"))
    write_set(target, "new", names=("a.txt",))  # the new set has no b.txt: the old one must not survive
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "a.txt"]
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_folder_is_used(tmp_path):
    (tmp_path / "out").mkdir()
    write_set(tmp_path / "out", "new")
    assert (tmp_path / "out" / "a.txt").read_text() == "new"


def test_a_failure_leaves_nothing_not_even_the_parents_it_made(tmp_path):
    with pytest.raises(RuntimeError), OutputDir(tmp_path / "x" / "y" / "out", "test", LAYOUT) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_keeps_the_previous_set(tmp_path):
    write_set(tmp_path / "out", "old")
    with pytest.raises(RuntimeError), OutputDir(tmp_path / "out", "test", LAYOUT) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("boom")
    assert (tmp_path / "out" / "a.txt").read_text() == "old" and (tmp_path / "out" / "b.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("where", ["under a file", "a file", "a symlink"])
def test_impossible_destinations_are_refused_before_the_work(tmp_path, where):
    (tmp_path / "f").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    target = {"under a file": tmp_path / "f" / "out", "a file": tmp_path / "f", "a symlink": tmp_path / "link"}[where]
    entered = []
    with pytest.raises(UsageError), OutputDir(target, "test", LAYOUT):
        entered.append(True)
    assert not entered and (tmp_path / "f").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "link", "real"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_parent_is_refused_before_the_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UsageError, match="cannot write"), OutputDir(locked / "out", "test", LAYOUT):
        pass


def test_proc_is_refused_before_the_work():
    with pytest.raises(UsageError, match="cannot write"), OutputDir("/proc/gpuclust-out", "test", LAYOUT):
        pass


def test_concurrent_writers_end_with_one_complete_set(tmp_path):
    target = tmp_path / "out"
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            write_set(target, tag)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "a.txt", "b.txt"]
    assert (target / "a.txt").read_text() == (target / "b.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupt_during_the_swap_puts_the_old_set_back(tmp_path, monkeypatch):
    target = tmp_path / "out"
    write_set(target, "old")
    real_rename = os.rename
    calls = []

    def rename_then_interrupt(src, dst):
        real_rename(src, dst)
        if not calls:
            calls.append(dst)
            os.kill(os.getpid(), signal.SIGINT)  # arrives between the two renames

    from gpuclust.io import outputs

    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)  # the two-rename fallback
    monkeypatch.setattr(os, "rename", rename_then_interrupt)
    with pytest.raises(Interrupted):
        write_set(target, "new")
    monkeypatch.undo()
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupt_during_the_one_step_swap_puts_the_old_set_back(tmp_path, monkeypatch):
    from gpuclust.io import outputs

    target = tmp_path / "out"
    write_set(target, "old")
    real_exchange = outputs._exchange
    calls = []

    def exchange_then_interrupt(a, b):
        done = real_exchange(a, b)
        if not calls:
            calls.append(b)
            os.kill(os.getpid(), signal.SIGINT)
        return done

    monkeypatch.setattr(outputs, "_exchange", exchange_then_interrupt)
    with pytest.raises(Interrupted):
        write_set(target, "new")
    monkeypatch.undo()
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_staging_of_a_killed_process_is_swept(tmp_path):
    stale = tmp_path / ".out.gpuclust-999999-0123abcd"
    stale.mkdir()
    (stale / "a.txt").write_text("half")
    write_set(tmp_path / "out", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_single_files_replace_only_what_gpuclust_wrote(tmp_path):
    mine = tmp_path / "result.json"
    mine.write_text(json.dumps({"user": "data"}))
    with pytest.raises(UsageError, match="did not write"):
        check_file_target(mine)
    mine.write_text(json.dumps({"gpuclust": "0.1.0"}))  # a key anyone may use is not gpuclust's mark
    with pytest.raises(UsageError, match="did not write"):
        check_file_target(mine)
    from gpuclust.io.outputs import FILE_MARK, file_mark

    mine.write_text(json.dumps({FILE_MARK: file_mark("drift")}))
    assert check_file_target(mine, kind="drift") == mine
    with pytest.raises(UsageError, match="drift file, not an evaluate file"):
        check_file_target(mine, kind="evaluate")
    (tmp_path / "page.html").write_text("<html>mine</html>")
    with pytest.raises(UsageError, match="did not write"):
        check_file_target(tmp_path / "page.html")
    assert check_file_target(tmp_path / "new.json") == tmp_path / "new.json"


# --- through the CLI ----------------------------------------------------------------------------

@pytest.fixture()
def events_file(tmp_path):
    events, _, _ = blob_events(n_users=60)
    path = tmp_path / "events.parquet"
    events.to_parquet(path)
    return path


def test_run_never_deletes_a_users_files(monkeypatch, capsys, tmp_path, events_file):
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("mine")
    code, _, err = cli(monkeypatch, capsys, "run", "--events", events_file, "--k", 3, "--out", out, "--device", "cpu")
    assert code == 2 and "did not write" in err and len(err.strip().splitlines()) == 1
    assert (out / "model" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["model"]


def test_run_into_a_previous_run_replaces_it_as_one_unit(monkeypatch, capsys, tmp_path, events_file):
    out = tmp_path / "out"
    assert cli(monkeypatch, capsys, "run", "--events", events_file, "--k", 3, "--out", out, "--device", "cpu")[0] == 0
    first = json.loads((out / "manifest.json").read_text())["run_id"]
    assert cli(monkeypatch, capsys, "run", "--events", events_file, "--k", 2, "--out", out, "--device", "cpu")[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    model = json.loads((out / "model" / "model.json").read_text())
    clusters = json.loads((out / "clusters.json").read_text())
    assert manifest["run_id"] != first and model["run_id"] == manifest["run_id"] == clusters["run_id"]
    assert model["clusterer"]["k"] == 2 == len(clusters["clusters"])


def test_a_bad_destination_fails_before_reading_the_input(monkeypatch, capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    # The events file does not exist either: the destination is what is reported, so it was checked first.
    code, _, err = cli(monkeypatch, capsys, "run", "--events", tmp_path / "none.parquet", "--k", 3,
                       "--out", tmp_path / "f" / "out")
    assert code == 2 and "is a file" in err


def test_what_was_put_in_place_is_noted_for_a_stop_after_it(tmp_path, monkeypatch):
    """The line a Ctrl-C prints reads this: a committed set and a file written on its own are noted; a file
    inside a staged set, and a set whose block failed, are not."""
    from gpuclust.cli.app import stop_line
    from gpuclust.io import outputs
    from gpuclust.io.outputs import written
    from gpuclust.io.writers import atomic_path

    monkeypatch.setattr(outputs, "_written", [])  # this process's earlier tests wrote too
    assert stop_line(signal.SIGINT) == "interrupted: stopped; nothing was written"
    before = written()
    with pytest.raises(RuntimeError), OutputDir(tmp_path / "failed", "test", LAYOUT) as staging:
        (staging / "a.txt").write_text("x")
        raise RuntimeError("the work failed")
    assert written() == before
    with OutputDir(tmp_path / "out", "test", LAYOUT) as staging:
        with atomic_path(staging / "a.txt") as tmp:
            tmp.write_text("inside the set")
        assert written() == before, "noted before the commit"
        with atomic_path(tmp_path / "page.html") as tmp:  # beside the staged set, as the report writes its page
            tmp.write_text("put in place now")
        assert written() == (tmp_path / "page.html",)
    with atomic_path(tmp_path / "alone.json") as tmp:
        tmp.write_text("{}")
    assert written() == (tmp_path / "page.html", tmp_path / "out", tmp_path / "alone.json")
    assert stop_line(signal.SIGTERM) == (f"terminated: stopped; {tmp_path / 'page.html'}, {tmp_path / 'out'}, "
                                         f"{tmp_path / 'alone.json'} were written in full before the stop, nothing after")
