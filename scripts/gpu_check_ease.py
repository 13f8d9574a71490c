"""EASE on the GPU at 20k and 50k items: fit time and CuPy pool size (benchmarks/ease_scale.py on cuda).

Run by scripts/gpu-check.sh; writes $OUT/ease-scale-gpu.json. The CPU figures are in
benchmarks/results/recommend-cpu.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    out = Path(os.environ.get("OUT", ROOT / "gpu-check-out")) / "ease-scale-gpu.json"
    sys.exit(subprocess.call([sys.executable, str(ROOT / "benchmarks" / "ease_scale.py"), "--device", "cuda",
                              "--items", "20000,50000", "--out", str(out)]))
