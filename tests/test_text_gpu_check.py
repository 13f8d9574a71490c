"""scripts/gpu_check_encoder.py: skips cleanly without CUDA; its logic runs in a tiny CPU smoke mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check_encoder.py"


def _has_cuda() -> bool:
    from gpuclust import accelerators

    return accelerators.torch_cuda().usable


@pytest.mark.skipif(_has_cuda(), reason="CUDA is usable here: the skip path does not apply")
def test_skips_with_a_clear_line_without_cuda():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OUT", None)
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("skipped: no CUDA")


def test_cpu_smoke_mode_reports_agreement_and_throughput(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers")
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_encoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert module.main(["--cpu-smoke", "--agreement-items", "64"]) == 0
    report = json.loads((tmp_path / "encoder.json").read_text())
    tiny = report["shapes"]["tiny"]
    assert report["agreement_ok"] and tiny["agreement_vs_fp32"]["bf16"]["min"] >= 0.99
    assert tiny["best"]["items_per_s"] > 0 and tiny["best"]["mfu"] > 0
    assert json.loads(capsys.readouterr().out) == report
