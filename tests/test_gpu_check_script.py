"""scripts/gpu-check.sh, run in a scratch copy with a stand-in Python that records what each step got."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_step_gets_the_output_folder(tmp_path):
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "gpu-check.sh", tree / "scripts")
    for check in (ROOT / "scripts").glob("gpu_check_*.py"):
        (tree / "scripts" / check.name).write_text("")  # the script runs each check it finds
    record = tmp_path / "seen.txt"
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "${OUT:-unset} $*" >> "$RECORD"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env.update(PYTHON=str(stub), RECORD=str(record))
    done = subprocess.run(["bash", str(tree / "scripts" / "gpu-check.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    lines = record.read_text().splitlines()
    assert any("pytest" in line for line in lines) and any("gpu_check_pipeline" in line for line in lines)
    default = str(tree / "gpu-check-out")
    assert all(line.startswith(default + " ") for line in lines), lines  # exported, not just set


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coverage_names_what_was_not_exercised_from_detection(tmp_path, monkeypatch, capsys):
    from gpuclust import accelerators
    from gpuclust.accelerators import Accelerator

    usable = {"torch_cuda": "torch (CUDA)", "cupy": "CuPy"}  # the GPU test machine's set
    missing = {"cudf": "cuDF", "cuml": "cuML", "faiss_gpu": "FAISS (GPU)"}
    for probe, name in usable.items():
        monkeypatch.setattr(accelerators, probe, lambda name=name: Accelerator(name, True, "1.0"))
    for probe, name in missing.items():
        monkeypatch.setattr(accelerators, probe, lambda name=name: Accelerator(name, False, None, "not importable"))
    monkeypatch.setattr(accelerators, "gpu_summary", lambda: {"name": "NVIDIA H200"})
    stages = {"preprocess": {"seconds": 1.0, "frame": "pandas", "array": "cupy"},
              "cluster": {"seconds": 0.5, "frame": "pandas", "array": "cupy", "engine": "torch"}}
    (tmp_path / "pipeline.json").write_text(json.dumps({"cuda": {"stages": stages, "gpu_allocators": {}}}))
    monkeypatch.setenv("OUT", str(tmp_path))
    assert _script("gpu_check_coverage").main() == 0
    printed = capsys.readouterr().out
    assert "usable here: torch (CUDA), CuPy" in printed
    assert "not exercised here: cuDF, cuML, FAISS (GPU)" in printed
    assert "stage cluster: pandas frames, cupy arrays, engine torch" in printed
    saved = json.loads((tmp_path / "coverage.json").read_text())
    assert saved["not_exercised"] == {name: "not importable" for name in missing.values()}
    assert saved["stages"] == stages

    (tmp_path / "pipeline.json").unlink()
    monkeypatch.setattr(accelerators, "cupy", lambda: Accelerator("CuPy", False, None, "no GPU"))
    _script("gpu_check_coverage").main()
    printed = capsys.readouterr().out
    assert "not exercised here: CuPy, cuDF, cuML, FAISS (GPU)" in printed and "did not run on CUDA" in printed


def test_pipeline_check_reports_each_stages_libraries_and_engine():
    from gpuclust import PipelineConfig, UserClusterer
    from tests.helpers import blob_events

    events, items, _ = blob_events(n_users=120)
    config = PipelineConfig(device="cpu", seed=0)
    config.cluster.k = 3
    config.reduce.method, config.reduce.n_components = "pca", 4
    manifest = UserClusterer(config=config).fit(events, items).manifest_
    stages = _script("gpu_check_pipeline").stage_coverage(manifest)
    assert stages["preprocess"]["frame"] == "pandas" and stages["features.tfidf"]["array"] == "numpy"
    assert stages["cluster"]["engine"] == "sklearn" and stages["reduce"]["engine"] == "sklearn"


def test_learned_check_runs_on_the_cpu_and_skips_without_cuda(capsys):
    module = _script("gpu_check_learned")
    assert module.main(["--cpu-smoke"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["sequence"]) == {"gru", "transformer"} and printed["sequence"]["gru"]["gpu"]["tokens_per_s"] > 0
    assert "speedup_users_per_s" in printed["autoencoder"] and printed["autoencoder"]["mfu"] > 0
    gru = printed["sequence"]["gru"]
    assert gru["mfu"] > 0 and gru["speedup_tokens_per_s"] > 0 and 0 <= gru["gpu"]["padding_share"] < 0.5
    assert printed["cpu"]["threads"] >= 1 and printed["skipped"] == []
    assert module.main(["--cpu-smoke", "--budget-seconds", "0"]) == 0  # past its deadline: skips, says what
    late = json.loads(capsys.readouterr().out)
    assert late["sequence"] == {} and "sequence gru" in late["skipped"] and "autoencoder" in late["skipped"]
    assert module.main([]) == 0
    assert capsys.readouterr().out.startswith("skipped: no CUDA")


def test_scale_check_runs_its_cpu_leg_and_reads_every_stage_from_the_manifest(tmp_path, monkeypatch, capsys):
    """The CPU twin of scripts/gpu_check_scale.py: the same synth, run and manifest reading, at 1,500 users."""
    monkeypatch.setenv("OUT", str(tmp_path))
    assert _script("gpu_check_scale").main(["1500", "8", "--devices", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "scale.json").read_text())
    cpu = printed["cpu"]
    assert cpu["total_seconds"] > 0 and cpu["ari"] is not None and cpu["peak_rss_mib"] > 0
    stages = cpu["stages"]
    assert {"read", "preprocess", "features.behaviour", "features.tfidf", "cluster", "explain", "recommend"} <= set(stages)
    assert all(s["array"] == "numpy" and s["frame"] == "pandas" for s in stages.values())
    assert all(s["event_frames_built"] == 0 for name, s in stages.items() if name != "read")  # counted, and none
    assert "cuda" not in printed and "targets" not in printed  # targets need both legs
