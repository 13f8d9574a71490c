"""Reuse and help: `run --item-vectors` takes what `gpuclust embed` wrote, `run --text-cache` reuses encoded
texts, `run --help` reads in panels with defaults, and --debug works after the command too."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from tests.helpers import blob_events, cli


def _help(monkeypatch, capsys, *command) -> str:
    monkeypatch.setenv("COLUMNS", "160")
    code, out, err = cli(monkeypatch, capsys, *command, "--help")
    assert code == 0, err
    return out


def test_run_help_is_in_panels_with_the_configs_defaults_and_no_bool_type(monkeypatch, capsys):
    from gpuclust.config import PipelineConfig

    text = _help(monkeypatch, capsys, "run")
    panels = re.findall(r"╭─ (.+?) ─", text)
    assert panels[1:] == ["Input", "Columns of the input files", "Preprocessing", "Features", "Text features",
                          "Sequence and autoencoder features", "Clustering", "Output", "Device and Dask",
                          "Privacy and signing"], panels
    defaults = PipelineConfig()
    flat = " ".join(text.replace("│", " ").split())

    def default_of(option: str) -> str:
        return re.search(rf"{option} <\w+> [^\[]*\[default: ([^\]]+)\]", flat).group(1)

    assert default_of("--k") == str(defaults.cluster.k)
    assert default_of("--features") == ",".join(defaults.features.features)
    assert default_of("--algorithm") == defaults.cluster.algorithm
    assert "<bool>" not in text and "<bool>" not in _help(monkeypatch, capsys, "evaluate")


def test_every_run_option_has_a_panel():
    from gpuclust.cli.app import RUN_HELP, run
    from gpuclust.cli.evaluate import EVALUATE_HELP, evaluate
    from gpuclust.cli.help import unplaced

    assert unplaced(run, RUN_HELP) == []  # a new option of `run`: give it a panel in RUN_HELP
    assert unplaced(evaluate, EVALUATE_HELP) == []

    def command(a: int = 0, b: int = 0) -> None: ...

    assert unplaced(command, {"a": ("Input", None), "c": ("Input", None)}) == ["b", "c"]


def test_debug_after_the_command_is_the_same_as_before_it(monkeypatch, capsys, tmp_path):
    from gpuclust.cli.help import hoist_debug
    from gpuclust.errors import UsageError

    assert hoist_debug(["run", "--debug", "--k", "3"]) == ["--debug", "run", "--k", "3"]
    assert hoist_debug(["run", "--k", "3"]) == ["run", "--k", "3"]
    assert hoist_debug(["run", "--", "--debug"]) == ["run", "--", "--debug"]
    missing = tmp_path / "none.parquet"
    code, _, err = cli(monkeypatch, capsys, "run", "--events", missing, "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error:")
    for args in (("--debug", "run"), ("run", "--debug")):  # --debug: the error is raised, with its traceback
        with pytest.raises(UsageError, match="file not found"):
            cli(monkeypatch, capsys, *args, "--events", missing, "--out", tmp_path / "o")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reuse")
    events, items, _ = blob_events(n_users=240, n_groups=3)
    events.to_parquet(tmp / "events.parquet")
    items.to_parquet(tmp / "items.parquet")
    return tmp


@pytest.fixture(scope="module")
def vectors(files):
    from gpuclust.features.text.embed import embed_items

    embed_items(files / "items.parquet", files / "vectors.parquet", model="default", device="cpu")
    return files / "vectors.parquet"


def _run(monkeypatch, capsys, files, out, *extra):
    return cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--items", files / "items.parquet",
               "--k", 3, "--device", "cpu", "--out", out, "--json", *extra)


def test_run_takes_the_item_vectors_embed_wrote_without_loading_a_model(monkeypatch, capsys, files, vectors):
    import gpuclust.features.text.featurizer as featurizer

    code, stdout, err = _run(monkeypatch, capsys, files, files / "encoded", "--features", "behaviour,tfidf,text")
    assert code == 0, err

    def no_model(*_args, **_kwargs):
        raise AssertionError("the catalogue was encoded again")

    monkeypatch.setattr(featurizer, "as_loaded", no_model)
    code, stdout, err = _run(monkeypatch, capsys, files, files / "reused", "--item-vectors", vectors)
    assert code == 0 and err == "", err
    manifest = json.loads((files / "reused" / "manifest.json").read_text())
    assert "text" in manifest["config"]["features"]["features"]  # --item-vectors alone adds the text feature
    assert manifest["features"]["blocks"]["text"]["items_with_vectors"] == 90
    same = pd.read_parquet(files / "encoded" / "assignments.parquet")
    again = pd.read_parquet(files / "reused" / "assignments.parquet")
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(same["cluster"], again["cluster"]) > 0.99


def test_item_vectors_of_another_catalogue_are_one_line(monkeypatch, capsys, files, vectors):
    table = pd.read_parquet(vectors)
    table.assign(item_id=table["item_id"] + 10_000).to_parquet(files / "other.parquet")
    code, _, err = _run(monkeypatch, capsys, files, files / "o1", "--item-vectors", files / "other.parquet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "none of the 90 items of the events has a vector" in err and "gpuclust embed" in err
    assert not (files / "o1").exists()
    table.iloc[:60].to_parquet(files / "part.parquet")
    code, _, err = _run(monkeypatch, capsys, files, files / "o2", "--item-vectors", files / "part.parquet")
    assert code == 0 and err.startswith("warning: 30 of 90 items of the events have no vector")
    code, _, err = _run(monkeypatch, capsys, files, files / "o3", "--item-vectors", files / "part.parquet",
                        "--features", "behaviour,tfidf")
    assert code == 2 and "--item-vectors feeds the text feature" in err
    code, _, err = _run(monkeypatch, capsys, files, files / "o4", "--item-vectors", files / "missing.parquet")
    assert code == 2 and "file not found" in err and not (files / "o4").exists()


def test_a_text_run_with_a_text_cache_encodes_the_catalogue_once(monkeypatch, capsys, files):
    cache = files / "cache"
    first = _run(monkeypatch, capsys, files, files / "c1", "--features", "behaviour,text", "--text-cache", cache)
    second = _run(monkeypatch, capsys, files, files / "c2", "--features", "behaviour,text", "--text-cache", cache)
    assert first[0] == 0 and second[0] == 0, (first[2], second[2])
    blocks = [json.loads((files / c / "manifest.json").read_text())["features"]["blocks"]["text"] for c in ("c1", "c2")]
    assert blocks[0]["cache_misses"] == 90 and blocks[0]["cache_hits"] == 0
    assert blocks[1]["cache_hits"] == 90 and blocks[1]["cache_misses"] == 0
    a, b = (pd.read_parquet(files / c / "assignments.parquet") for c in ("c1", "c2"))
    assert np.array_equal(a["cluster"].to_numpy(), b["cluster"].to_numpy())
