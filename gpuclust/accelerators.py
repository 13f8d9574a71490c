"""Detection of optional accelerators: usable, not merely importable.

`import cudf` can succeed on a machine with no GPU; only a tiny real operation tells whether a
library can work. Each probe runs once per process and records why a library is unusable.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    name: str
    usable: bool
    version: str | None = None
    reason: str = ""


def _version(module_name: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - any import failure means "not installed/broken"
        return None
    return getattr(module, "__version__", "unknown")


def _probe(name: str, module_name: str, check) -> Accelerator:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        return Accelerator(name, False, None, f"not importable: {type(exc).__name__}: {exc}".splitlines()[0])
    version = getattr(module, "__version__", "unknown")
    try:
        check(module)
    except Exception as exc:  # noqa: BLE001 - a failed probe is a fact to report, not a crash
        return Accelerator(name, False, version, f"imports but fails: {type(exc).__name__}: {exc}".splitlines()[0][:200])
    return Accelerator(name, True, version)


def _check_torch_cuda(torch) -> None:
    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False (CPU build or no driver/GPU)")
    torch.zeros(1, device="cuda").add_(1).item()


def _check_cupy(cupy) -> None:
    int(cupy.arange(3).sum())


def _check_cudf(cudf) -> None:
    int(cudf.Series([1, 2, 3]).sum())


def _check_cuml(cuml) -> None:
    import cupy
    from cuml.cluster import KMeans

    KMeans(n_clusters=1, random_state=0, output_type="cupy").fit(cupy.zeros((2, 1), dtype="float32"))


def _check_faiss_cpu(faiss) -> None:
    faiss.IndexFlatL2(2)


def _check_faiss_gpu(faiss) -> None:
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() < 1:
        raise RuntimeError("faiss has no GPU support here (faiss-cpu build or no GPU)")


@functools.cache
def torch_cuda() -> Accelerator:
    return _probe("torch (CUDA)", "torch", _check_torch_cuda)


@functools.cache
def cupy() -> Accelerator:
    return _probe("CuPy", "cupy", _check_cupy)


@functools.cache
def cudf() -> Accelerator:
    return _probe("cuDF", "cudf", _check_cudf)


@functools.cache
def cuml() -> Accelerator:
    if not cupy().usable:
        return Accelerator("cuML", False, _version("cuml"), "needs a usable CuPy: " + cupy().reason)
    return _probe("cuML", "cuml", _check_cuml)


@functools.cache
def faiss_cpu() -> Accelerator:
    return _probe("FAISS (CPU)", "faiss", _check_faiss_cpu)


@functools.cache
def faiss_gpu() -> Accelerator:
    return _probe("FAISS (GPU)", "faiss", _check_faiss_gpu)


PROBES = (torch_cuda, cupy, cudf, cuml, faiss_cpu, faiss_gpu)


def all_accelerators() -> list[Accelerator]:
    """Every probe, run now where it has not run yet (`gpuclust info`)."""
    return [probe() for probe in PROBES]


def probed() -> list[Accelerator]:
    """The probes this process has run: what its choice of device and engines looked at. A run's manifest
    records these; a `--device cpu` run looks at none, and probing them anyway would import torch (about
    1.3 s on the 2-core machine) only to write that CUDA is absent."""
    return [probe() for probe in PROBES if probe.cache_info().currsize]


def gpu_summary() -> dict:
    """Name and memory of the first CUDA device, or {} where there is none."""
    if not torch_cuda().usable:
        return {}
    import torch

    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_total_gib": round(total / 2**30, 2),
        "memory_free_gib": round(free / 2**30, 2),
        "compute_capability": f"{props.major}.{props.minor}",
        "bf16": bool(torch.cuda.is_bf16_supported()),
    }
