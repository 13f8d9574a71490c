"""A saved model is verified in full before use: any single file of it changed, removed, added or renamed,
or a model.json that lies about its files, is refused by `gpuclust assign` with exit 2 and one line.

The model folder is listed when the tests run, so files a later format adds (a digest file, say) are
covered without naming them here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.contract import call, snapshot
from tests.helpers import blob_events


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tamper")
    events, items, _ = blob_events(n_users=60, n_groups=2, events_per_user=10)
    events.to_parquet(base / "events.parquet")
    items.to_parquet(base / "items.parquet")
    result = call("run", "--events", base / "events.parquet", "--items", base / "items.parquet", "--k", 2,
                  "--device", "cpu", "--out", base / "run", "--json")
    assert result.code == 0, result
    return {"model": base / "run" / "model", "events": base / "events.parquet"}


def refusal(fitted: dict[str, Path], model: Path, out: Path) -> str | None:
    """None if `gpuclust assign` refuses `model` as promised; otherwise what happened instead."""
    result = call("assign", "--model", model, "--events", fitted["events"], "--out", out, "--device", "cpu")
    if result.escaped:
        return f"traceback: {result.escaped}"
    if result.code != 2:
        return f"exit {result.code} (accepted)" if result.code == 0 else f"exit {result.code}"
    if len(result.stderr_lines) != 1:
        return f"refused, but stderr is {len(result.stderr_lines)} lines: {result.stderr!r}"
    if out.exists():
        return f"refused, but wrote {sorted(snapshot(out))}"
    return None


def model_files(model: Path) -> list[str]:
    return sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file())


def tamper_each_file(fitted, tmp_path, change: Callable[[Path, Path], None]) -> dict[str, str]:
    """Apply `change` to each file of a fresh copy of the model; what assign did where it did not refuse."""
    failures = {}
    for i, name in enumerate(model_files(fitted["model"])):
        model = tmp_path / f"model-{i}"
        shutil.copytree(fitted["model"], model)
        change(model, model / name)
        problem = refusal(fitted, model, tmp_path / f"out-{i}")
        if problem:
            failures[name] = problem
    return failures


def test_the_untouched_model_is_accepted(fitted, tmp_path):
    result = call("assign", "--model", fitted["model"], "--events", fitted["events"], "--out", tmp_path / "out",
                  "--device", "cpu")
    assert result.code == 0, result


@pytest.mark.parametrize("position", ["first", "a third in", "middle", "two thirds in", "last"])
def test_a_model_with_one_byte_flipped_in_any_file_is_refused(fitted, tmp_path, position):
    def flip(model: Path, path: Path) -> None:
        data = bytearray(path.read_bytes())
        at = {"first": 0, "a third in": len(data) // 3, "middle": len(data) // 2,
              "two thirds in": 2 * len(data) // 3, "last": len(data) - 1}[position]
        data[at] ^= 0x01  # the smallest change: '3' becomes '2', 'a' becomes '`'
        path.write_bytes(bytes(data))

    failures = tamper_each_file(fitted, tmp_path, flip)
    assert not failures, f"accepted or mishandled: {failures}"


def test_a_model_with_any_file_removed_is_refused(fitted, tmp_path):
    failures = tamper_each_file(fitted, tmp_path, lambda model, path: path.unlink())
    assert not failures, f"accepted or mishandled: {failures}"


def test_a_model_with_any_file_renamed_is_refused(fitted, tmp_path):
    failures = tamper_each_file(fitted, tmp_path, lambda model, path: path.rename(path.with_name("x" + path.name)))
    assert not failures, f"accepted or mishandled: {failures}"


def test_a_model_with_any_file_emptied_is_refused(fitted, tmp_path):
    failures = tamper_each_file(fitted, tmp_path, lambda model, path: path.write_bytes(b""))
    assert not failures, f"accepted or mishandled: {failures}"


@pytest.mark.parametrize("stray", ["notes.txt", ".hidden", "model.json.bak", "arrays.safetensors.orig", "sub/x.bin"])
def test_a_model_with_a_stray_file_added_is_refused(fitted, tmp_path, stray):
    model = tmp_path / "model"
    shutil.copytree(fitted["model"], model)
    (model / stray).parent.mkdir(parents=True, exist_ok=True)
    (model / stray).write_bytes(b"not part of the model\n")
    assert refusal(fitted, model, tmp_path / "out") is None


CHECKSUMS = "checksums.sha256"


def rewrite_checksums(model: Path) -> None:
    """What a careful tamperer does after an edit: make the checksum file agree with every file again."""
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(model.iterdir())
             if p.name != CHECKSUMS]
    (model / CHECKSUMS).write_text("\n".join(lines) + "\n")


def edit_model_json(fitted, tmp_path, edit: Callable[[dict], object]) -> str | None:
    """model.json edited and the checksums made to agree: what is left to refuse it is its content."""
    model = tmp_path / "model"
    shutil.copytree(fitted["model"], model)
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(edit(meta), indent=2))
    rewrite_checksums(model)
    return refusal(fitted, model, tmp_path / "out")


def edit_file_list(fitted, tmp_path, edit: Callable[[list[str]], list[str]]) -> str | None:
    """The list of files to verify (the checksum file) edited: it is itself what says what is verified."""
    model = tmp_path / "model"
    shutil.copytree(fitted["model"], model)
    lines = (model / CHECKSUMS).read_text().splitlines()
    (model / CHECKSUMS).write_text("".join(f"{line}\n" for line in edit(lines)))
    return refusal(fitted, model, tmp_path / "out")


def test_a_model_with_its_file_list_emptied_is_refused(fitted, tmp_path):
    assert edit_file_list(fitted, tmp_path, lambda lines: []) is None


@pytest.mark.parametrize("reach", ["as written", "deep enough to reach /etc"])
def test_a_file_list_naming_a_file_outside_the_model_is_refused(fitted, tmp_path, reach):
    passwd = Path("/etc/passwd")
    digest = hashlib.sha256(passwd.read_bytes()).hexdigest() if passwd.is_file() else "0" * 64
    depth = 4 if reach == "as written" else len((tmp_path / "model").resolve().parts) - 1
    name = "../" * depth + "etc/passwd"
    assert edit_file_list(fitted, tmp_path, lambda lines: [*lines, f"{digest}  {name}"]) is None


def test_a_file_list_naming_a_sibling_outside_the_model_with_its_true_digest_is_refused(fitted, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("a file beside the model\n")
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    assert edit_file_list(fitted, tmp_path, lambda lines: [*lines, f"{digest}  ../outside.txt"]) is None


@pytest.mark.parametrize("document", [[], None, "model", 3, {}], ids=["list", "null", "string", "number", "empty"])
def test_a_model_json_that_is_not_a_model_document_is_refused(fitted, tmp_path, document):
    assert edit_model_json(fitted, tmp_path, lambda meta: document) is None


def test_a_model_json_missing_any_key_is_refused(fitted, tmp_path):
    keys = sorted(json.loads((fitted["model"] / "model.json").read_text()))
    failures = {}
    for key in keys:
        problem = edit_model_json(fitted, tmp_path / key, lambda meta, key=key: {k: v for k, v in meta.items()
                                                                                 if k != key})
        if problem:
            failures[key] = problem
    assert not failures, f"accepted or mishandled without the key: {failures}"
