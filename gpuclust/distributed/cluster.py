"""The Dask cluster a fit runs on: a LocalCluster started for the run (a LocalCUDACluster where the GPU
path is usable), a running scheduler's address, or a `distributed.Client` the caller made.

What differs by device lives here and in `engine.py`: LocalCluster vs LocalCUDACluster (one worker
per GPU, an RMM pool, spilling to host). A cluster gpuclust started is gpuclust's to close, on
success, on error and on Ctrl-C alike, so no worker process outlives the command; a cluster the user
runs (an address, a Client) is left running and only our connection to it is closed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gpuclust.config import DaskConfig
from gpuclust.errors import UsageError

# Dask warns on every task graph above 10 MB, and our graphs carry small broadcasts; silence it a bit higher.
LARGE_GRAPH = "50MB"
# A worker that dies while running a task is tried again elsewhere this many times before the run fails
# (Dask's own default, stated here so the manifest and the README can say it).
ALLOWED_FAILURES = 3
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class LocalSizes:
    """How a LocalCluster is cut from this machine."""

    workers: int
    threads_per_worker: int
    memory_limit: str  # per worker

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "threads_per_worker": self.threads_per_worker,
                "memory_limit": self.memory_limit}


def total_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - distributed depends on psutil
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def local_defaults(config: DaskConfig, gpus: int = 0) -> LocalSizes:
    """Sizes from the flags where given, else from the machine: on the CPU one single-threaded worker per
    core (the stages hold the GIL in NumPy/pandas code between BLAS calls, so processes beat threads),
    at most 8, and 90% of the memory shared among them; on a GPU machine one worker per GPU."""
    cores = os.cpu_count() or 1
    if gpus:
        workers = config.workers or gpus
        threads = config.threads_per_worker or 1
    else:
        threads = config.threads_per_worker or 1
        workers = config.workers or max(1, min(8, cores // threads))
    memory = config.memory_limit or f"{int(0.9 * total_memory_bytes() / workers) // 2**20}MiB"
    return LocalSizes(workers, threads, memory)


def _gpus_for_workers() -> int:
    """GPUs a LocalCUDACluster would use: where the GPU path and dask-cuda are usable, else 0 (CPU workers)."""
    from gpuclust import accelerators
    from gpuclust.backend import installed

    if not (accelerators.cupy().usable and accelerators.torch_cuda().usable and installed("dask_cuda")):
        return 0
    summary = accelerators.gpu_summary() or {}
    return int(summary.get("count", 0) or 0)


def start_local(config: DaskConfig, device: str) -> tuple[Any, LocalSizes, str]:
    """(cluster, sizes, kind): a LocalCUDACluster where the run's device is CUDA and dask-cuda is installed,
    a CPU LocalCluster otherwise."""
    gpus = _gpus_for_workers() if device == "cuda" else 0
    sizes = local_defaults(config, gpus)
    common = {"n_workers": sizes.workers, "threads_per_worker": sizes.threads_per_worker,
              "memory_limit": sizes.memory_limit, "dashboard_address": None, "silence_logs": 50}
    if gpus:
        from dask_cuda import LocalCUDACluster

        # One worker per GPU; RMM pool for cuDF/cuML; cuDF's own spilling to host (the recommended way
        # for dask_cudf work) instead of dask-cuda's whole-object device LRU.
        cluster = LocalCUDACluster(n_workers=min(sizes.workers, gpus), threads_per_worker=sizes.threads_per_worker,
                                   memory_limit=sizes.memory_limit, rmm_pool_size=0.5, enable_cudf_spill=True,
                                   dashboard_address=None, silence_logs=50)
        return cluster, sizes, "LocalCUDACluster"
    from distributed import LocalCluster

    return LocalCluster(processes=True, **common), sizes, "LocalCluster"


@dataclass
class Session:
    """An open client, what it is connected to, and what gpuclust must close at the end."""

    client: Any
    kind: str  # LocalCluster | LocalCUDACluster | address | client
    address: str
    sizes: LocalSizes | None = None
    owned_cluster: Any = None

    def describe(self) -> dict[str, Any]:
        info = self.client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(int(w["nthreads"]) for w in workers.values())
        limits = sorted({int(w["memory_limit"]) for w in workers.values()})
        return {"kind": self.kind, "address": self.address, "workers": len(workers), "threads": threads,
                "memory_limit_per_worker": limits,
                **({"local": self.sizes.to_dict()} if self.sizes else {})}


@contextlib.contextmanager
def open_session(scheduler: Any, config: DaskConfig, device: str = "cpu") -> Iterator[Session]:
    """`with open_session("local" | "tcp://..." | client, config, device) as session:` a connected client.

    A LocalCluster started here is closed when the block ends however it ends (Ctrl-C included)."""
    import dask

    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--scheduler needs Dask: pip install 'gpuclust[dask]' (dask[distributed])") from None
    if isinstance(scheduler, Client):
        try:
            yield Session(scheduler, "client", str(scheduler.scheduler.address))
        finally:
            from gpuclust.distributed.blocks import release_held

            release_held(scheduler)
        return
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.admin.large-graph-warning-threshold": LARGE_GRAPH}):
        if scheduler == "local":
            cluster = client = None
            try:
                cluster, sizes, kind = start_local(config, device)
                client = Client(cluster)
                yield Session(client, kind, str(cluster.scheduler_address), sizes, cluster)
            finally:
                _close(client, cluster)
            return
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                             "`dask scheduler` and workers with `dask worker ADDRESS`, or use --scheduler local") from None
        try:
            yield Session(client, "address", scheduler)
        finally:
            _close(client, None)


def _close(client: Any, cluster: Any) -> None:
    """Close the client, then the cluster; a Ctrl-C while closing must not leave workers behind, and is
    raised once they are closed, so a run stopped late still stops (and writes nothing)."""
    stopped: KeyboardInterrupt | None = None
    for thing in (client, cluster):
        if thing is None:
            continue
        for _ in range(3):
            try:
                thing.close()
                break
            except KeyboardInterrupt as exc:
                stopped = stopped or exc
                continue
            except Exception:  # noqa: BLE001 - closing is best effort; the processes go with the nanny
                break
    if stopped is not None:
        raise stopped
