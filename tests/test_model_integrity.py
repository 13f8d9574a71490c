"""Integrity beyond checksums: every number a model loads is checked, and a keyed signature lets a
deployment refuse models it did not sign (issue 18, "Models: integrity is more than checksums")."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from helpers import blob_events, cli

from gpuclust import UserClusterer
from gpuclust.errors import UsageError
from gpuclust.signing import SIGNATURE, ModelKey

KEY = b"a-model-signing-key-0123456789abcdef"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    events, items, _ = blob_events(n_users=120)
    events.to_parquet(root / "events.parquet")
    model = UserClusterer(3, device="cpu").fit(events, items)
    model.save(root / "plain")
    model.save(root / "signed", model_key=KEY)
    return root, events


def _resum(folder):
    """What someone who can write the folder does after an edit: recompute the checksums."""
    names = sorted(p.name for p in folder.iterdir() if p.name not in ("checksums.sha256", SIGNATURE))
    lines = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}" for n in names]
    (folder / "checksums.sha256").write_text("\n".join(lines) + "\n")


def _edit_config(section, key, value):
    def edit(folder):
        doc = json.loads((folder / "model.json").read_text())
        doc["config"][section][key] = value
        (folder / "model.json").write_text(json.dumps(doc))
    return edit


def _edit_array(name_start, value):
    def edit(folder):
        from safetensors.numpy import load_file, save_file

        arrays = load_file(str(folder / "arrays.safetensors"))
        name = next(n for n in arrays if n.startswith(name_start))
        arrays[name].flat[0] = value
        save_file(arrays, str(folder / "arrays.safetensors"))
    return edit


def _deep(folder):
    (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)


DAMAGE = {
    "session gap 1e308": _edit_config("preprocess", "session_gap_minutes", 1e308),
    "min_user_events 1e11": _edit_config("preprocess", "min_user_events", 10**11),
    "event weight -5": _edit_config("preprocess", "event_weights", {"view": -5.0, "purchase": 5.0}),
    "NaN centre": _edit_array("clusterer.centres", np.nan),
    "infinite centre": _edit_array("clusterer.centres", np.inf),
    "NaN fuser mean": _edit_array("fuser.", np.nan),
    "model.json nested 100k deep": _deep,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_values_with_recomputed_checksums_are_refused_at_load(saved, tmp_path, damage):
    root, _ = saved
    folder = tmp_path / "m"
    shutil.copytree(root / "plain", folder)
    DAMAGE[damage](folder)
    _resum(folder)
    with pytest.raises(UsageError) as info:
        UserClusterer.load(folder, device="cpu")
    assert str(info.value).count("\n") == 0 and str(folder) in str(info.value)


def test_a_signed_model_loads_with_its_key_and_is_refused_with_another(saved):
    root, events = saved
    assert (root / "signed" / SIGNATURE).is_file() and not (root / "plain" / SIGNATURE).exists()
    signed = UserClusterer.load(root / "signed", device="cpu", model_key=KEY)
    plain = UserClusterer.load(root / "plain", device="cpu")
    assert signed.predict(events).equals(plain.predict(events))
    with pytest.raises(UsageError, match="not signed with key"):
        UserClusterer.load(root / "signed", device="cpu", model_key=b"another-key-of-enough-bytes-000")
    with pytest.raises(UsageError, match="is not signed"):
        UserClusterer.load(root / "plain", device="cpu", model_key=KEY)


def test_an_edit_with_recomputed_checksums_breaks_the_signature(saved, tmp_path):
    root, _ = saved
    folder = tmp_path / "m"
    shutil.copytree(root / "signed", folder)
    _edit_config("cluster", "max_iter", 7)(folder)  # a valid value: only the signature can tell
    _resum(folder)
    UserClusterer.load(folder, device="cpu")  # the plain checksums accept it: they detect corruption only
    with pytest.raises(UsageError, match="changed after signing"):
        UserClusterer.load(folder, device="cpu", model_key=KEY)


def test_the_key_never_reaches_the_model_folder(saved):
    root, _ = saved
    fingerprint = ModelKey(KEY).fingerprint
    for path in (root / "signed").iterdir():
        assert KEY not in path.read_bytes()
    assert fingerprint in (root / "signed" / SIGNATURE).read_text()
    assert KEY.decode() not in repr(ModelKey(KEY))


def test_cli_run_signs_and_assign_drift_and_recommend_check(saved, tmp_path, monkeypatch, capsys):
    root, _ = saved
    key, other = tmp_path / "key", tmp_path / "other"
    key.write_bytes(KEY + b"\n")
    other.write_text("a-different-key-0123456789abcdef")
    run = ("run", "--events", root / "events.parquet", "--k", "3", "--device", "cpu")
    code, _, err = cli(monkeypatch, capsys, *run, "--out", tmp_path / "r", "--model-key", key)
    assert code == 0, err
    assert (tmp_path / "r" / "model" / SIGNATURE).is_file()
    assign = ("assign", "--model", tmp_path / "r" / "model", "--events", root / "events.parquet", "--device", "cpu")
    code, _, err = cli(monkeypatch, capsys, *assign, "--out", tmp_path / "a", "--model-key", key)
    assert code == 0, err
    code, _, err = cli(monkeypatch, capsys, *assign, "--out", tmp_path / "b", "--model-key", other)
    assert code == 2 and err.count("\n") == 1 and "not signed with key" in err and not (tmp_path / "b").exists()
    code, _, err = cli(monkeypatch, capsys, "drift", "--model", root / "plain", "--events", root / "events.parquet",
                       "--model-key", key)
    assert code == 2 and err.count("\n") == 1 and "is not signed" in err
    recommend = ("recommend", "--run", tmp_path / "r", "--segments", "--device", "cpu", "--json")
    code, out, err = cli(monkeypatch, capsys, *recommend, "--model-key", key)
    assert code == 0 and json.loads(out), err
    code, out, err = cli(monkeypatch, capsys, *recommend, "--model-key", other)
    assert code == 2 and err.count("\n") == 1 and "not signed with key" in err and not out
    code, _, err = cli(monkeypatch, capsys, *run, "--out", tmp_path / "c", "--model-key", tmp_path / "missing")
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "c").exists()


def test_the_service_refuses_a_model_not_signed_with_its_key(saved):
    pytest.importorskip("fastapi")
    from gpuclust.serve.app import ServeSettings, create_app

    root, _ = saved
    create_app(ServeSettings(root / "signed", device="cpu", model_key=ModelKey(KEY)))
    with pytest.raises(UsageError, match="is not signed"):
        create_app(ServeSettings(root / "plain", device="cpu", model_key=ModelKey(KEY)))
