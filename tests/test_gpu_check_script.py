"""scripts/gpu-check.sh, run in a scratch copy with a stand-in Python that records what each step got."""

from __future__ import annotations

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
