"""The backend contract: where the work happens, resolved once per run and passed to every stage.

Stage code is written once against `Backend`: `xp` is CuPy or NumPy, `sparse` is cupyx.scipy.sparse
or scipy.sparse, `frame` is cuDF or pandas. What differs by device lives here (which engine runs a
kind of work: `pick_engine`; handing GPU caches back between stages: `free_caches`), in `frames`
(frame columns to arrays, results back to the caller's kind) and in the engine adapters, not in
stages. Every device-to-host copy goes through `to_host`, which counts bytes so a test can assert
that the GPU path moved only labels and small summaries.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from gpuclust import accelerators, registry
from gpuclust.errors import DeviceUnavailableError, UsageError

DEVICE_CHOICES = registry.DEVICES


@dataclass(frozen=True)
class Backend:
    device: str  # "cuda" or "cpu"
    xp: ModuleType = field(repr=False)
    sparse: ModuleType = field(repr=False)
    frame: ModuleType = field(repr=False)
    torch_device: str = "cpu"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickled by device: the modules are resolved again where it is unpickled (a fitted model pickles)."""
        return resolve_backend, (self.device,)

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

    def pick_engine(self, kind: str, requested: str = "auto") -> str:
        """The engine that runs `kind` (an algorithm or reducer of the registry) here.

        A named engine must be usable, or it is an error saying why; `auto` takes the first usable one in
        the registry's order of preference for this device."""
        if requested not in registry.engines_of(kind):
            raise UsageError(f"unknown engine {requested!r} for {kind}: choose one of {', '.join(registry.engines_of(kind))}")
        if requested != "auto":
            usable, why = engine_usable(requested, self)
            if not usable:
                raise UsageError(f"engine {requested!r} for {kind} is not usable here ({why}); try --engine auto")
            return requested
        reasons = []
        for engine in registry.PREFERENCE[kind][self.device]:
            usable, why = engine_usable(engine, self, chosen_by_auto=True)
            if usable:
                return engine
            reasons.append(why)
        raise UsageError(f"no engine for {kind} is usable here: {'; '.join(reasons)}")

    def free_caches(self) -> None:
        """Hand cached GPU blocks back (torch's allocator, CuPy's pool) so the next stage can use them."""
        if not self.on_gpu:
            return
        import torch

        torch.cuda.empty_cache()
        self.xp.get_default_memory_pool().free_all_blocks()

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


def installed(module: str) -> bool:
    """Importable without importing it (a library loaded already counts)."""
    return module in sys.modules or importlib.util.find_spec(module) is not None


def engine_usable(engine: str, backend: Backend, chosen_by_auto: bool = False) -> tuple[bool, str]:
    """(usable, why not) for an engine name of the registry on this backend's device.

    FAISS asked for by name runs wherever faiss imports (on a GPU without its GPU build, on host copies);
    `auto` takes it on a GPU only with the GPU build."""
    if engine == "sklearn":
        return True, ""
    if engine == "cuml":
        probe = accelerators.cuml()
        return probe.usable, f"cuML: {probe.reason}"
    if engine == "torch":
        if backend.on_gpu:
            probe = accelerators.torch_cuda()
            return probe.usable, f"torch (CUDA): {probe.reason}"
        return installed("torch"), "PyTorch is not installed: pip install torch"
    if engine == "faiss":  # on a GPU the adapter uses FAISS's GPU index where that build is present
        probe = accelerators.faiss_gpu() if backend.on_gpu and chosen_by_auto else accelerators.faiss_cpu()
        return probe.usable, f"FAISS: {probe.reason}; pip install faiss-cpu"
    if engine == "umap-learn":
        return installed("umap"), "umap-learn is not installed: pip install -e '.[umap]' in the gpuclust folder, or use --reduce pca"
    return False, f"unknown engine {engine!r}"


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


def to_torch(array):
    """CuPy / NumPy -> torch through DLPack, zero-copy."""
    import torch

    return torch.from_dlpack(array)


def spd_inverse(a: Any, backend: Backend) -> Any:
    """The inverse of a symmetric positive definite matrix, overwriting `a` where the device allows.

    CPU: LAPACK potrf + potri on `a`'s own memory (a C-ordered symmetric matrix is its Fortran-ordered
    transpose), then the upper triangle mirrored in row blocks: no items² copy, where numpy.linalg.inv
    holds four. CUDA: `xp.linalg.inv` (device memory is sized for it; TF32 is fine per the design notes).
    Raises numpy.linalg.LinAlgError for a matrix that is not positive definite: the CPU's Cholesky says
    so; a GPU's general inverse of a singular matrix gives infinities instead, which are checked here."""
    if backend.on_gpu:
        p = backend.xp.linalg.inv(a)
        if not bool(backend.xp.isfinite(p).all()):
            raise np.linalg.LinAlgError("matrix is singular: its inverse is not finite")
        return p
    from scipy.linalg import lapack

    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (a,))
    factor, info = potrf(a.T, lower=1, overwrite_a=1, clean=0)
    if info == 0:
        factor, info = potri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (LAPACK info {info})")
    if not np.shares_memory(factor, a):  # a non-contiguous input was copied: the answer is in the copy
        a = np.ascontiguousarray(factor.T)
    n = a.shape[0]
    step = max(1, (1 << 24) // max(n, 1))
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = a[start:stop, start:stop]
        a[start:stop, start:stop] = np.triu(block) + np.triu(block, 1).T
        a[stop:, start:stop] = a[start:stop, stop:].T
    return a


TORCH_TOP_K_CELLS = 1 << 20  # below this NumPy's argpartition takes milliseconds: no reason to load torch


def row_top_k(scores: Any, k: int, xp: ModuleType) -> Any:
    """Column indices of each row's `k` largest scores (in no particular order; ties broken arbitrarily).

    torch.topk over the same memory (zero-copy) where it pays:
    - NumPy: argpartition is a one-thread introselect over a negated copy; torch.topk is 3-5x faster on
      recommender blocks (1,677 x 20,000 float32, k=50: 0.25 s against 0.086 s on one core), and the
      item-kNN neighbours and every top-10 list are such blocks. Small blocks stay on NumPy: loading
      torch for them would cost more than it saves.
    - CuPy: argpartition sorts every row whole (CuPy's documentation says so); the GPU backend always
      has CUDA torch, whose topk selects. Not yet timed on a GPU."""
    if xp is np and not (scores.size >= TORCH_TOP_K_CELLS and scores.flags.c_contiguous and scores.flags.writeable):
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]
    if not installed("torch"):
        return xp.argpartition(-scores, k - 1, axis=1)[:, :k]
    import torch

    if xp is np:
        return torch.topk(torch.from_numpy(scores), k, dim=1, sorted=False).indices.numpy()
    return xp.from_dlpack(torch.topk(torch.from_dlpack(scores), k, dim=1, sorted=False).indices)


def dense_product(a: Any, b: Any, backend: Backend) -> Any:
    """a @ b of two CSR matrices as a dense float32 array, for row blocks whose product is dense anyway
    (item-kNN's rows of XᵀX).

    SciPy's public product first counts its output (a pass over every pair) and then fills it (a second);
    with the output's dense size as the bound, its kernel runs once into buffers of that size: 0.89 s
    against 0.59 s for 838 x 20,000 at 1M users. The kernel is SciPy's own (`_sparsetools.csr_matmat`,
    unchanged for years); where it is missing or the inputs are not plain CSR, the public product. CuPy:
    the public product."""
    if backend.on_gpu or getattr(a, "format", None) != "csr" or getattr(b, "format", None) != "csr":
        return _public_dense(a, b)
    try:
        from scipy.sparse import _sparsetools
    except ImportError:  # pragma: no cover - a SciPy without it: the public product
        return _public_dense(a, b)
    rows, cols = a.shape[0], b.shape[1]
    index = np.int64 if rows * cols >= 2**31 - 1 else np.result_type(a.indptr, a.indices, b.indptr, b.indices)
    value = np.result_type(a.data, b.data, np.float32)
    indptr = np.empty(rows + 1, dtype=index)
    indices, data = np.empty(rows * cols, dtype=index), np.empty(rows * cols, dtype=value)
    _sparsetools.csr_matmat(rows, cols, *(v.astype(index, copy=False) for v in (a.indptr, a.indices)),
                            a.data.astype(value, copy=False),
                            *(v.astype(index, copy=False) for v in (b.indptr, b.indices)), b.data.astype(value, copy=False),
                            indptr, indices, data)
    out = np.zeros((rows, cols), dtype=value)
    nnz = int(indptr[-1])
    _sparsetools.csr_todense(rows, cols, indptr, indices[:nnz], data[:nnz], out)
    return out.astype(np.float32, copy=False)


def _public_dense(a: Any, b: Any) -> Any:
    product = a @ b
    return (product.toarray() if hasattr(product, "toarray") else product).astype(np.float32, copy=False)


T = TypeVar("T")


def cpu_threads() -> int:
    """The cores this process may run on (its affinity where the system says, else the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def map_row_blocks(fn: Callable[[int, int], T], n_rows: int, row_cells: int, cells: int, backend: Backend) -> list[T]:
    """fn(start, stop) over consecutive blocks of rows 0..n_rows, results in order, sized so that the
    blocks in flight hold at most `cells` cells of `row_cells` each.

    On the CPU the blocks run on a thread per core, each a share of `cells`: what does the work in them
    (SciPy's sparse products, NumPy's element-wise passes, torch.topk) releases the GIL, so the item-kNN
    pass at 200k users / 20k items took 2.36 s on 2 cores against 4.85 s on one. On a GPU, in order: one
    stream fills the device. A stop (Ctrl-C, an error) cancels the blocks not yet started."""
    workers = 1 if backend.on_gpu else cpu_threads()
    step = max(1, cells // max(row_cells * workers, 1))
    ranges = [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]
    if workers == 1 or len(ranges) < 2:
        return [fn(start, stop) for start, stop in ranges]
    pool = ThreadPoolExecutor(min(workers, len(ranges)), thread_name_prefix="gpuclust-block")
    try:
        with _one_torch_thread_per_block():
            return list(pool.map(fn, *zip(*ranges, strict=True)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def row_shares(n_rows: int, xp: ModuleType) -> list[tuple[int, int]]:
    """Consecutive ranges of rows 0..n_rows, one per CPU thread where `xp` is NumPy, one (all rows) on a
    device: the shares of a pass whose work per row is fixed, for `map_tasks`."""
    workers = cpu_threads() if xp is np else 1
    step = max(1, -(-n_rows // workers))
    return [(start, min(start + step, n_rows)) for start in range(0, n_rows, step)] or [(0, 0)]


def map_tasks(fn: Callable[[int], T], count: int, xp: ModuleType) -> list[T]:
    """fn(0), ..., fn(count - 1), results in order: on a pool of a thread per core where `xp` is NumPy, each
    task to the next free thread; in order on a device. For work that releases the GIL (SciPy's sparse
    products, one-thread BLAS), e.g. over `row_shares`."""
    workers = min(count, cpu_threads()) if xp is np else 1
    if workers <= 1:
        return [fn(i) for i in range(count)]
    pool = ThreadPoolExecutor(workers, thread_name_prefix="gpuclust-task")
    try:
        return list(pool.map(fn, range(count)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def one_thread_blas(xp: ModuleType) -> Iterator[None]:
    """BLAS on one thread while `map_tasks` runs row shares on a thread per core (NumPy only): threaded
    OpenBLAS under threads of our own oversubscribes the cores, and spent seconds in tall-skinny GEMMs."""
    if xp is not np:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextmanager
def _one_torch_thread_per_block() -> Iterator[None]:
    """The blocks are the parallelism: torch's own OpenMP team in each block (torch.topk) would multiply
    them, cores x cores threads on a many-core machine. One torch thread each while blocks run."""
    if not installed("torch"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
