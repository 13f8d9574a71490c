"""The backend contract: where the work happens, resolved once per run.

Stage code is written once against `Backend`: `xp` is CuPy or NumPy, `sparse` is cupyx.scipy.sparse
or scipy.sparse, `frame` is cuDF or pandas. Every device-to-host copy goes through `to_host`, which
counts bytes so a test can assert that the GPU path moved only labels and small summaries.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

import numpy as np

from gpuclust import accelerators
from gpuclust.errors import DeviceUnavailableError, UsageError

DeviceChoice = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    device: str  # "cuda" or "cpu"
    xp: ModuleType = field(repr=False)
    sparse: ModuleType = field(repr=False)
    frame: ModuleType = field(repr=False)
    torch_device: str = "cpu"

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def frame_library(self) -> str:
        return self.frame.__name__

    def asarray(self, data: Any, dtype: Any = None):
        """Bring host or device data onto this backend's array library."""
        if self.on_gpu:
            return self.xp.asarray(data, dtype=dtype)
        return np.asarray(to_host(data) if not isinstance(data, np.ndarray) else data, dtype=dtype)

    def describe(self) -> dict:
        return {
            "device": self.device,
            "array": self.xp.__name__,
            "sparse": self.sparse.__name__,
            "frame": self.frame_library,
            "torch_device": self.torch_device,
        }


def cpu_backend() -> Backend:
    import pandas
    import scipy.sparse

    return Backend("cpu", np, scipy.sparse, pandas, "cpu")


def cuda_backend() -> Backend:
    """CuPy arrays and CUDA torch; cuDF frames where cuDF is usable, pandas otherwise."""
    import cupy
    import cupyx.scipy.sparse

    if accelerators.cudf().usable:
        import cudf as frame
    else:
        import pandas as frame
    return Backend("cuda", cupy, cupyx.scipy.sparse, frame, "cuda")


def resolve_backend(device: str = "auto") -> Backend:
    """`auto` takes the GPU where CuPy and CUDA torch both work; `cuda` without them is an error."""
    if device not in DEVICE_CHOICES:
        raise UsageError(f"unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if device == "cpu":
        return cpu_backend()
    missing = [a for a in (accelerators.cupy(), accelerators.torch_cuda()) if not a.usable]
    if not missing:
        return cuda_backend()
    if device == "cuda":
        why = "; ".join(f"{a.name}: {a.reason}" for a in missing)
        raise DeviceUnavailableError(
            f"--device cuda requested but the GPU path is unusable ({why}); "
            "use --device cpu, or run `gpuclust info` to see what is missing"
        )
    return cpu_backend()


# --- host transfers -------------------------------------------------------------------------

class TransferCounter:
    """Counts bytes copied from device to host; thread-safe, process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = 0
        self.copies = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.bytes += int(nbytes)
            self.copies += 1

    def reset(self) -> None:
        with self._lock:
            self.bytes = 0
            self.copies = 0


transfers = TransferCounter()


def is_device_array(data: Any) -> bool:
    return hasattr(data, "__cuda_array_interface__") or type(data).__module__.startswith("cupy")


def array_module(data: Any) -> ModuleType:
    """CuPy for device arrays, NumPy otherwise: for code that takes arrays from either side."""
    if not is_device_array(data):
        return np
    import cupy

    return cupy


def to_host(data: Any) -> np.ndarray:
    """The one way data leaves the GPU; host data passes through uncounted."""
    if isinstance(data, np.ndarray):
        return data
    module = type(data).__module__
    if module.startswith("torch"):
        if data.is_cuda:
            transfers.add(data.element_size() * data.nelement())
        return data.detach().cpu().numpy()
    if module.startswith("cupy"):
        transfers.add(data.nbytes)
        return data.get()
    if module.startswith("cudf"):
        out = data.to_pandas()
        transfers.add(pandas_nbytes(out))
        return out.to_numpy() if hasattr(out, "to_numpy") else np.asarray(out)
    return np.asarray(data)


def pandas_nbytes(obj: Any) -> int:
    """Bytes of a pandas DataFrame, Series or Index (what a cuDF object's `to_pandas()` gives).

    `memory_usage` is a per-column Series for a DataFrame but a plain int for a Series or an Index.
    """
    usage = obj.memory_usage(deep=True)
    return int(usage) if np.isscalar(usage) else int(usage.sum())


def from_torch(tensor, backend: Backend):
    """torch -> CuPy / NumPy through DLPack: zero-copy on both devices."""
    tensor = tensor.detach()
    if backend.on_gpu:
        return backend.xp.from_dlpack(tensor)
    if tensor.is_cuda:
        raise UsageError("a CUDA tensor cannot become a NumPy array without a host copy; use to_host")
    return np.from_dlpack(tensor.contiguous())


def to_torch(array, backend: Backend):
    """CuPy / NumPy -> torch through DLPack, zero-copy."""
    import torch

    return torch.from_dlpack(array)
