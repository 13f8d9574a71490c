"""Users' files are sacred and an output set is replaced as one unit.

`gpuclust run --out DIR` into a folder of the user's own files either refuses (exit 2, one line) or writes
its outputs beside them, deleting and overwriting nothing it did not write. A rerun into a finished run's
folder replaces assignments, clusters, map, model and manifest together: never a new manifest beside an
old model, and never a mix when the run fails while writing.
"""

from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path

import pytest

from gpuclust.errors import UsageError
from tests.contract import call, check_run_outputs, snapshot, strict_json, tree_changes
from tests.helpers import blob_events

USER_FILES = {
    "data.csv": "user_id,score\n1,0.5\n",
    "model/notes.txt": "why I trust this model\n",
    "notes/readme.md": "# my analysis\n",
    ".env": "SECRET=not-yours\n",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("safety")
    events, items, _ = blob_events(n_users=80, n_groups=3, events_per_user=10)
    events.to_parquet(base / "events.parquet")
    items.to_parquet(base / "items.parquet")
    return {"events": base / "events.parquet", "items": base / "items.parquet"}


def run(data, out: Path, *options):
    return call("run", "--events", data["events"], "--items", data["items"], "--device", "cpu", "--out", out,
                *options)


def write_user_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def lost_user_files(folder: Path, files: dict[str, str]) -> dict[str, str]:
    return {name: ("removed" if not (folder / name).is_file() else "changed") for name, text in files.items()
            if not (folder / name).is_file() or (folder / name).read_text() != text}


@pytest.mark.parametrize("files", [USER_FILES, {"model/notes.txt": USER_FILES["model/notes.txt"]},
                                   {"data.csv": USER_FILES["data.csv"]}], ids=["several", "in model/", "beside"])
def test_run_into_a_folder_of_user_files_keeps_every_one_of_them(data, tmp_path, files):
    out = tmp_path / "mine"
    write_user_files(out, files)
    before = snapshot(out)
    result = run(data, out, "--k", 3)
    assert result.escaped is None, result.escaped
    assert result.code in (0, 2), result
    assert lost_user_files(out, files) == {}
    if result.code == 2:
        assert len(result.stderr_lines) == 1, result.stderr
        assert not any(tree_changes(before, snapshot(out)).values())
    else:
        check_run_outputs(out, before)


def test_run_never_overwrites_a_user_file_that_has_an_output_name(data, tmp_path):
    out = tmp_path / "mine"
    mine = {"clusters.json": '{"clusters": "my own hand-made grouping"}\n'}
    write_user_files(out, mine)
    result = run(data, out, "--k", 3)
    assert result.escaped is None and result.code in (0, 2), result
    assert lost_user_files(out, mine) == {}, "a user's clusters.json was overwritten by a run"


def model_config(out: Path) -> dict:
    return strict_json(out / "model" / "model.json")["config"]


def test_a_rerun_with_another_k_replaces_the_whole_output_set(data, tmp_path):
    out = tmp_path / "run"
    assert run(data, out, "--k", 3).code == 0
    result = run(data, out, "--k", 4, "--features", "behaviour")
    assert result.code == 0, result
    manifest = check_run_outputs(out)
    assert manifest["config"]["cluster"]["k"] == 4 and model_config(out)["cluster"]["k"] == 4


def test_a_rerun_that_saves_no_model_leaves_no_old_model_beside_its_manifest(data, tmp_path, monkeypatch):
    """UMAP runs save no model ("model: not saved"); simulated here for any reduction that cannot be saved."""
    from gpuclust.errors import UsageError
    from gpuclust.estimator import UserClusterer

    out = tmp_path / "run"
    assert run(data, out, "--k", 3).code == 0

    def cannot_save(self, directory, model_key=None):
        raise UsageError("a UMAP reduction cannot be saved without pickle")

    monkeypatch.setattr(UserClusterer, "save", cannot_save)
    result = run(data, out, "--k", 4)
    assert result.code == 0, result
    manifest = check_run_outputs(out)
    assert manifest["model"].startswith("not saved")
    assert not (out / "model").exists(), "the previous run's model is left beside a manifest that saved none"


@pytest.mark.skipif(importlib.util.find_spec("umap") is None, reason="umap-learn is not installed")
def test_a_rerun_with_umap_leaves_no_old_model_beside_its_manifest(data, tmp_path):
    out = tmp_path / "run"
    assert run(data, out, "--k", 3).code == 0
    result = run(data, out, "--k", 3, "--reduce", "umap", "--reduce-components", 2)
    assert result.code == 0, result
    manifest = check_run_outputs(out)
    assert manifest["model"].startswith("not saved") and not (out / "model").exists()


def test_a_refused_rerun_leaves_the_previous_output_set_as_it_was(data, tmp_path):
    out = tmp_path / "run"
    assert run(data, out, "--k", 3).code == 0
    before = snapshot(out)
    result = run(data, out, "--k", 500)
    assert result.code == 2 and len(result.stderr_lines) == 1, result
    assert not any(tree_changes(before, snapshot(out)).values())


def test_a_run_that_fails_while_writing_leaves_the_previous_output_set_as_it_was(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert run(data, out, "--k", 3).code == 0
    before = snapshot(out)
    import gpuclust.io.writers as writers

    real = writers.write_json

    def disk_full(path, document):
        if Path(path).name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, document)

    monkeypatch.setattr(writers, "write_json", disk_full)
    monkeypatch.setattr("gpuclust.run.write_json", disk_full, raising=False)
    monkeypatch.setattr("gpuclust.io.run_folder.write_json", disk_full)
    result = run(data, out, "--k", 4)
    assert result.code != 0
    assert not any(tree_changes(before, snapshot(out)).values()), "a failed rerun changed the previous outputs"


@pytest.mark.parametrize("fail_at", range(1, 7))
def test_a_crash_between_renames_leaves_the_old_or_the_new_set_never_a_mix(data, tmp_path, monkeypatch, fail_at):
    """The commit of an output set may be several renames; a failure after any of them must not mix runs."""
    out = tmp_path / "run"
    assert run(data, out, "--k", 3).code == 0
    old = snapshot(out)
    calls = {"n": 0}
    real_replace, real_rename = os.replace, os.rename

    def failing(real):
        def move(src, dst, *args, **kwargs):
            if Path(dst).parent == out or Path(dst) == out:
                calls["n"] += 1
                if calls["n"] == fail_at:
                    raise OSError(errno.EIO, "Input/output error", str(dst))
            return real(src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "replace", failing(real_replace))
    monkeypatch.setattr(os, "rename", failing(real_rename))
    result = run(data, out, "--k", 4, "--features", "behaviour")
    monkeypatch.undo()
    if result.code == 0:
        manifest = check_run_outputs(out)
        assert manifest["config"]["cluster"]["k"] == 4
        return
    if snapshot(out) == old:
        return
    try:
        manifest = check_run_outputs(out)
    except AssertionError as exc:
        raise AssertionError(f"neither the old nor a new output set after a failure at rename {fail_at}: {exc}") from exc
    assert manifest["config"]["cluster"]["k"] == 4, f"the old manifest, but not the old set, after rename {fail_at}"



def test_a_single_output_file_is_never_an_input_nor_inside_an_input_folder(tmp_path):
    """drift --out MODEL/model.json replaced the saved model's own (gpuclust-written) description."""
    from gpuclust.io.outputs import check_file_target

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text('{"gpuclust": "0"}')
    with pytest.raises(UsageError, match="--out .* inside the folder of --model"):
        check_file_target(model / "model.json", "--out", {"--model": model})
    with pytest.raises(UsageError, match="--out .* the same file as --events"):
        check_file_target(tmp_path / "e.json", "--out", {"--events": tmp_path / "e.json"})
    assert check_file_target(tmp_path / "r.json", "--out", {"--model": model, "--items": None}).name == "r.json"


def test_another_commands_output_is_named_as_gpuclusts_not_as_foreign(data, tmp_path):
    """assign --out RUN/model said the folder 'holds files gpuclust did not write (... a gpuclust model output)'."""
    out = tmp_path / "r"
    assert run(data, out, "--k", "3").code == 0
    before = snapshot(out)
    result = call("assign", "--model", out / "model", "--events", data["events"], "--device", "cpu",
                  "--out", out / "model")
    assert result.code == 2 and "did not write" not in result.stderr, result.stderr
    assert "is a gpuclust model output, not an assign output" in result.stderr
    assert not any(tree_changes(before, snapshot(out)).values())
