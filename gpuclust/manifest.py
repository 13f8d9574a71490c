"""Run records: seconds and peak memory per stage, versions, device; what manifest.json holds, built here."""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gpuclust import accelerators
from gpuclust.backend import Backend, transfers
from gpuclust.gpu_memory import StagePeaks
from gpuclust.gpu_memory import allocators as gpu_allocators
from gpuclust.preprocess.prepared import event_frames

# Every distribution name a library is installed under: pip wheels per CUDA major version, conda names.
# Only the installed ones are recorded, each under its own name, so a manifest says which build ran.
PACKAGES = (
    "gpuclust", "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "torch", "transformers",
    "sentence-transformers", "safetensors", "umap-learn",
    "cupy", "cupy-cuda11x", "cupy-cuda12x", "cupy-cuda13x",
    "cudf", "cudf-cu12", "cudf-cu13", "cuml", "cuml-cu12", "cuml-cu13", "rmm", "rmm-cu12", "rmm-cu13",
    "faiss", "faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu13",
    "dask", "distributed", "dask-cuda", "dask-cudf", "dask-cudf-cu12", "dask-cudf-cu13",
    "nvidia-ml-py", "pynvml",
)
CLEAR_REFS = Path("/proc/self/clear_refs")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def machine(backend: Backend | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if backend is not None:
        info["backend"] = backend.describe()
        if backend.on_gpu:
            info["gpu"] = accelerators.gpu_summary()
    return info


def peak_rss_bytes() -> int:
    """Peak RSS since the last reset (VmHWM), falling back to the process-wide peak."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Writing 5 to clear_refs resets VmHWM on Linux, which makes per-stage peaks possible."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class StageRecorder:
    """`with recorder.stage("features"):` records seconds, peak RSS and GPU peaks for that stage.

    GPU peaks are per allocator (torch, CuPy, RMM; `gpuclust.gpu_memory`), and the summary says which
    allocators were measured.
    """

    def __init__(self, backend: Backend | None = None, on_stage: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.on_stage = on_stage  # told each stage's name as it starts (a CLI progress line)
        self.stages: dict[str, dict[str, Any]] = {}
        self.started = time.perf_counter()
        self.peak_rss_bytes = 0

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {}
        if self.on_stage is not None:
            self.on_stage(name)
        if self.backend is not None:  # the backend's libraries: where this stage's frames and arrays could live
            record.update(frame=self.backend.frame_library, array=self.backend.xp.__name__)
        exact = reset_peak_rss()
        gpu = StagePeaks() if self._on_gpu else None
        copies_before, frames_before = transfers.bytes, event_frames.built
        start = time.perf_counter()
        try:
            with gpu or contextlib.nullcontext():
                yield record
        finally:
            if gpu is not None:
                record.update(gpu.record())
            peak = peak_rss_bytes()
            self.peak_rss_bytes = max(self.peak_rss_bytes, peak)
            record.update({
                "seconds": round(time.perf_counter() - start, 4),
                "peak_rss_mib": round(peak / 2**20, 1),
                "peak_rss_is_per_stage": exact,
                "device_to_host_bytes": transfers.bytes - copies_before,
                "event_frames_built": event_frames.built - frames_before,
            })
            self.stages[name] = {**record}

    def summary(self) -> dict[str, Any]:
        out = {
            "total_seconds": round(time.perf_counter() - self.started, 4),
            "peak_rss_mib": round(max(self.peak_rss_bytes, peak_rss_bytes()) / 2**20, 1),
            "stages": self.stages,
        }
        if self._on_gpu:
            out["gpu_allocators"] = gpu_allocators()
            out["gpu_peak_note"] = ("per stage, each allocator's peak of bytes in use; their sum is an upper "
                                    "bound of the stage's peak (the peaks need not coincide)")
        return out

    @property
    def _on_gpu(self) -> bool:
        return self.backend is not None and self.backend.on_gpu


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def build_manifest(*, config: dict[str, Any], backend: Backend, recorder: StageRecorder, data: Any,
                   features: dict[str, Any], reduce: dict[str, Any] | None, cluster: dict[str, Any],
                   metrics: dict[str, Any], moved_bytes: int, custom: dict[str, str]) -> dict[str, Any]:
    """Everything a fit did, in one JSON-able document: config, versions, device, timings, rows, results."""
    import uuid

    import gpuclust

    return {
        "gpuclust": gpuclust.__version__,
        "run_id": uuid.uuid4().hex,
        "created": now_iso(),
        "config": config,
        "custom_stages": custom,
        "device": machine(backend),
        "accelerators": [vars(a) for a in accelerators.probed()],  # what the device choice looked at
        "versions": versions(),
        "timings": recorder.summary(),
        "rows": {"steps": [s.to_dict() for s in data.steps], "events": data.n_events, "users": data.n_users,
                 "items": data.n_items},
        "features": features,
        "reduce": reduce,
        "cluster": cluster,
        "metrics": metrics,
        "device_to_host_bytes": moved_bytes,
    }
