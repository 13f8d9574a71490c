#!/usr/bin/env python
"""What a gpu-check run exercised on the GPU, and what it could not: the last step of gpu-check.sh.

Derived from detection (`gpuclust.accelerators`), never from a fixed list: a GPU library counts as usable
only where its probe ran a real operation here; the others are printed as "not exercised here: ...".
The pipeline check's record ($OUT/pipeline.json) adds, per stage of the CUDA run, the frame library,
array library and engine that actually ran. Writes $OUT/coverage.json (./gpu-check-out without OUT).

    PYTHONPATH=. python scripts/gpu_check_coverage.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The accelerators a GPU path of gpuclust can use (FAISS's CPU build is not one).
GPU_PROBES = ("torch_cuda", "cupy", "cudf", "cuml", "faiss_gpu")


def coverage(out_dir: Path) -> dict[str, Any]:
    from gpuclust import accelerators

    found = [getattr(accelerators, probe)() for probe in GPU_PROBES]
    result: dict[str, Any] = {
        "usable": [a.name for a in found if a.usable],
        "not_exercised": {a.name: a.reason for a in found if not a.usable},
        "gpu": accelerators.gpu_summary(),
    }
    pipeline = out_dir / "pipeline.json"
    if pipeline.exists():
        record = json.loads(pipeline.read_text())
        result["stages"] = record.get("cuda", {}).get("stages")
        result["gpu_allocators"] = record.get("cuda", {}).get("gpu_allocators")
    else:
        result["stages"] = None
        result["note"] = f"no {pipeline.name}: the pipeline check did not run on CUDA here"
    return result


def lines(result: dict[str, Any]) -> list[str]:
    out = [f"usable here: {', '.join(result['usable']) or 'no GPU library'}"]
    if result["not_exercised"]:
        out.append(f"not exercised here: {', '.join(result['not_exercised'])}")
        out += [f"  {name}: {why}" for name, why in result["not_exercised"].items()]
    for name, stage in (result.get("stages") or {}).items():
        engine = f", engine {stage['engine']}" if stage.get("engine") else ""
        out.append(f"  stage {name}: {stage.get('frame')} frames, {stage.get('array')} arrays{engine}")
    if result.get("note"):
        out.append(result["note"])
    return out


def main() -> int:
    out_dir = Path(os.environ.get("OUT") or ROOT / "gpu-check-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = coverage(out_dir)
    (out_dir / "coverage.json").write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
