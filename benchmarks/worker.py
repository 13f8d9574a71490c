"""One measurement in a fresh process: `python -m benchmarks.worker` reads a JSON job on stdin.

A fresh process per (contender, size) keeps peak RSS honest (no memory left over from a larger run)
and makes every contender pay its own imports and model loading, as a user's run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCH-RESULT "


def run_isolated(job: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """Run `measure(**job)` in a child Python; its failure becomes an `error` in the record, not a crash."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.worker"], input=json.dumps(job), text=True,
                              capture_output=True, env=env, cwd=ROOT, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"contender": job["contender"], "workload": job["workload"], "error": f"timed out after {timeout_s} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"contender": job["contender"], "workload": job["workload"],
            "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def main() -> int:
    from benchmarks.contenders import Workload, measure

    job = json.loads(sys.stdin.read())
    job["workload"] = Workload.from_dict(job["workload"])
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    record = measure(**job)
    print(MARK + json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
