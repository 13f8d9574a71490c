"""How we measure: warm-up, repeats, median and spread, GPU synchronisation, and what machine it was.

Numbers a buyer acts on must say how they were taken. Every timed call here synchronises CUDA before
and after (a kernel still running is not finished work), every figure keeps all its repeats, and every
run records the machine's load, because the shared CPU boxes this runs on are rarely idle.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cuda_usable() -> tuple[bool, str]:
    """(usable, why not): the GPU path needs CUDA torch and CuPy, as gpuclust's backend does."""
    from gpuclust import accelerators

    missing = [a for a in (accelerators.torch_cuda(), accelerators.cupy()) if not a.usable]
    return (not missing, "; ".join(f"{a.name}: {a.reason}" for a in missing))


def sync() -> None:
    """Wait for queued CUDA work, where CUDA is in use, so that wall time covers it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def spread(values: list[float], digits: int = 4) -> dict[str, Any]:
    """Median, min, max and every value: the spread is part of the result, not noise to hide."""
    if not values:
        return {"median": None, "min": None, "max": None, "all": [], "n": 0}
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "all": [round(v, digits) for v in values], "n": len(values)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call, CUDA synchronised on both sides."""
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def wait_for_quiet(threshold: float | None, max_wait_s: float, poll_s: float = 10.0) -> dict[str, float]:
    """Wait (up to `max_wait_s`) until the 1-minute load average drops below `threshold`.

    Other jobs on a shared box inflate CPU timings; waiting is cheaper than a wrong figure. Returns the
    load seen and the seconds waited, which go into the record either way.
    """
    waited, load = 0.0, load_average()
    while threshold is not None and load >= threshold and waited < max_wait_s:
        time.sleep(poll_s)
        waited += poll_s
        load = load_average()
    return {"load_before": load, "waited_s": waited}


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def environment() -> dict[str, Any]:
    """Device name, versions, core count: what a reader needs to compare two results files."""
    from gpuclust import accelerators
    from gpuclust.manifest import versions

    env: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": memory_gib(), "platform": platform.platform(),
        "versions": versions(), "gpu": accelerators.gpu_summary(),
        "unusable_accelerators": {a.name: a.reason for a in accelerators.all_accelerators() if not a.usable},
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def device_label(env: dict[str, Any] | None = None) -> str:
    """`cpu-2core` on a CPU box; the GPU's name as a slug (e.g. `nvidia-h100-80gb-hbm3`) on a GPU box."""
    env = env or environment()
    if env.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", env["gpu"]["name"].lower()).strip("-")
    return f"cpu-{env.get('cores') or os.cpu_count()}core"


# The stages of a fit in the order they run, for tables and plots.
STAGE_ORDER = ("read", "preprocess", "features.behaviour", "features.tfidf", "features.text", "fuse", "reduce",
               "k_sweep", "cluster", "assess", "explain")


def stage_names(record: dict[str, Any]) -> list[str]:
    """The stage names of a run record, in the order they run (unknown ones last)."""
    names = list(record.get("stages", {}))
    return sorted(names, key=lambda n: STAGE_ORDER.index(n) if n in STAGE_ORDER else len(STAGE_ORDER))


def write_results(out: str | Path, result: dict[str, Any], markdown: str) -> None:
    """OUT.json (the figures) and OUT.md (the table a person reads) beside it; the table is also printed."""
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
