"""The CLI's promises: one clear line and exit code 2 for bad input, no partial output."""

import json
import sys

import pandas as pd
import pytest

from gpuclust.cli.app import main
from tests.helpers import blob_events, cli


@pytest.fixture()
def files(tmp_path):
    events, items, truth = blob_events(n_users=120)
    events.to_parquet(tmp_path / "events.parquet")
    items.to_parquet(tmp_path / "items.parquet")
    truth.to_parquet(tmp_path / "truth.parquet")
    return tmp_path


def test_run_writes_outputs_and_json_summary(monkeypatch, capsys, files):
    out = files / "out"
    code, stdout, _ = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--items",
                          files / "items.parquet", "--truth", files / "truth.parquet", "--k", 3, "--out", out,
                          "--device", "cpu", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["metrics"]["ari"] == pytest.approx(1.0)
    assert sorted(p.name for p in out.iterdir()) == [".gpuclust.json", "assignments.parquet", "clusters.json",
                                                     "manifest.json", "map.parquet", "model"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["cluster"]["k"] == 3
    assert {"preprocess", "features.tfidf", "cluster"} <= set(manifest["timings"]["stages"])
    assert all("peak_rss_mib" in s for s in manifest["timings"]["stages"].values())
    assigned = pd.read_parquet(out / "assignments.parquet")
    assert list(assigned.columns) == ["user_id", "cluster", "distance", "anomaly_score"] and len(assigned) == 120


def bad_inputs(files):
    events = files / "events.parquet"
    renamed = files / "renamed.csv"
    pd.read_parquet(events).rename(columns={"user_id": "uid"}).to_csv(renamed, index=False)
    bad_time = files / "bad_time.csv"
    pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "event_type": "view",
                  "timestamp": ["soon", "later"]}).to_csv(bad_time, index=False)
    corrupt = files / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1garbage")
    return {
        "missing file": (["--events", files / "nope.parquet"], "file not found"),
        "misnamed column": (["--events", renamed], "columns found: uid"),
        "empty after filtering": (["--events", events, "--min-user-events", 1000], "no events left"),
        "k too large": (["--events", events, "--k", 500], "k=500 is larger than the number of users"),
        "unparseable timestamps": (["--events", bad_time], "could not be parsed"),
        "corrupt parquet": (["--events", corrupt], "not a readable Parquet"),
        "impossible parameter": (["--events", events, "--engine", "magic"], "choose one of"),
        "cuda without a gpu": (["--events", events, "--device", "cuda"], None),
    }


@pytest.mark.parametrize("case", [
    "missing file", "misnamed column", "empty after filtering", "k too large", "unparseable timestamps",
    "corrupt parquet", "impossible parameter", "cuda without a gpu"])
def test_bad_input_is_one_line_exit_2_and_no_output(monkeypatch, capsys, files, case):
    args, expected = bad_inputs(files)[case]
    if case == "cuda without a gpu":
        from gpuclust import accelerators

        if accelerators.torch_cuda().usable and accelerators.cupy().usable:
            pytest.skip("a GPU is usable here")
        expected = "--device cuda requested"
    out = files / "out"
    code, stdout, stderr = cli(monkeypatch, capsys, "run", *args, "--out", out)
    assert code == 2
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:") and expected in " ".join(stderr.split())
    assert "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())


def test_info_lists_every_accelerator_as_json(monkeypatch, capsys):
    code, stdout, _ = cli(monkeypatch, capsys, "info", "--json")
    assert code == 0
    names = {a["name"] for a in json.loads(stdout)["accelerators"]}
    assert {"torch (CUDA)", "CuPy", "cuDF", "cuML", "FAISS (CPU)", "FAISS (GPU)"} == names


def test_debug_shows_the_traceback(monkeypatch, capsys, files):
    monkeypatch.setattr(sys, "argv", ["gpuclust", "--debug", "run", "--events", str(files / "nope.csv"),
                                      "--out", str(files / "o")])
    with pytest.raises(Exception, match="file not found"):
        main()


def test_synth_then_demo_print_a_cluster_table(monkeypatch, capsys, tmp_path):
    code, stdout, _ = cli(monkeypatch, capsys, "synth", "--users", 300, "--items", 200, "--groups", 3,
                          "--out", tmp_path / "data", "--json")
    assert code == 0 and json.loads(stdout)["n_users"] == 300
    assert {p.name for p in (tmp_path / "data").iterdir()} == {".gpuclust.json", "events.parquet", "items.parquet",
                                                               "truth.parquet"}
    code, stdout, _ = cli(monkeypatch, capsys, "demo", "--users", 600, "--groups", 3, "--out", tmp_path / "demo",
                          "--device", "cpu")
    assert code == 0
    assert "3 clusters of" in stdout and "ARI" in stdout
    assert (tmp_path / "demo" / "run" / "manifest.json").exists()
    report = tmp_path / "demo" / "run" / "report.html"  # the demo writes the report an analyst opens first
    assert report.stat().st_size > 10_000 and f"report: {report}" in stdout.replace("\n", "")


def test_toml_config_is_read_and_flags_override_it(monkeypatch, capsys, files):
    config = files / "run.toml"
    config.write_text('seed = 5\n[cluster]\nk = 2\n[features]\nfeatures = ["behaviour"]\n')
    code, stdout, _ = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--config", config,
                          "--k", 3, "--out", files / "o", "--json")
    assert code == 0
    manifest = json.loads((files / "o" / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 5 and manifest["config"]["cluster"]["k"] == 3
    assert manifest["config"]["features"]["features"] == ["behaviour"]
    bad = files / "bad.toml"
    bad.write_text("[cluster]\nclusters = 3\n")
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--config", bad,
                          "--out", files / "o2")
    assert code == 2 and "unknown key(s) clusters in [cluster]" in stderr


def test_run_saves_a_model_that_assign_reuses(monkeypatch, capsys, files):
    out = files / "out"
    code, _, _ = cli(monkeypatch, capsys, "run", "--events", files / "events.parquet", "--items",
                     files / "items.parquet", "--k", 3, "--out", out, "--json")
    assert code == 0 and (out / "model" / "model.json").exists()
    code, stdout, _ = cli(monkeypatch, capsys, "assign", "--model", out / "model", "--events",
                          files / "events.parquet", "--out", files / "assigned", "--json")
    assert code == 0
    first = pd.read_parquet(out / "assignments.parquet")
    again = pd.read_parquet(files / "assigned" / "assignments.parquet")
    assert (first["cluster"] == again["cluster"]).all()
    code, _, stderr = cli(monkeypatch, capsys, "assign", "--model", files / "nothing", "--events",
                          files / "events.parquet", "--out", files / "x")
    assert code == 2 and "no model at" in stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--events", "e.parquet", "--out", "o", "--no-such-option"], "No such option"),
    (["runn"], "No such command"),
    (["run", "--events", "e.parquet"], "Missing option '--out'"),
    (["run", "--events", "e.parquet", "--out", "o", "--k"], "requires an argument"),
    (["synth", "--out", "o", "--users", "many"], "Invalid value for '--users'"),
])
def test_usage_errors_are_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args, expected):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = cli(monkeypatch, capsys, *args)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_bare_command_shows_help_without_a_traceback(monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys)
    assert code == 2 and "Usage" in stdout + stderr and "Traceback" not in stdout + stderr


@pytest.mark.parametrize(("args", "toml", "expected"), [
    (["--algorithm", "dbscan", "--engine", "faiss"], None, "unknown --engine (cluster.engine) 'faiss'"),
    (["--model", "default"], None, "--model (features.text.model) has no effect without 'text' in --features"),
    (["--reduce-components", "4"], None, "--reduce-components (reduce.n_components) has no effect without --reduce"),
    (["--eps", "0.3"], None, "--eps (cluster.eps) has no effect without --algorithm dbscan"),
    (["--feature-weights", "text=2"], None, "'text' is not among the features"),
    ([], "[features.text]\nmodle = 'x'\n", "unknown key(s) modle in [features.text]"),
    ([], "[reduce]\nmethod = 'pca'\nengine = 'faiss'\n", "unknown --reduce-engine (reduce.engine) 'faiss'"),
])
def test_contradictory_settings_fail_before_any_data_is_read(monkeypatch, capsys, tmp_path, args, toml, expected):
    # The events file does not exist: the settings error is what is reported, so it was found first.
    extra = []
    if toml is not None:
        (tmp_path / "run.toml").write_text(toml)
        extra = ["--config", tmp_path / "run.toml"]
    code, _, stderr = cli(monkeypatch, capsys, "run", "--events", tmp_path / "none.parquet", "--out",
                          tmp_path / "out", *args, *extra)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expected in " ".join(stderr.split()), stderr
    assert not (tmp_path / "out").exists()
