"""The Dask cluster a fit runs on: a LocalCluster started for the run (a LocalCUDACluster where the GPU
path is usable), a running scheduler's address, or a `distributed.Client` the caller made.

What differs by device lives here and in `engine.py`: LocalCluster vs LocalCUDACluster (one worker
per GPU, an RMM pool, spilling to host). A cluster gpuclust started is gpuclust's to close, on
success, on error and on Ctrl-C alike, so no worker process outlives the command; a cluster the user
runs (an address, a Client) is left running and only our connection to it is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gpuclust.config import DaskConfig
from gpuclust.errors import UsageError
from gpuclust.io.outputs import signals_held

# Dask warns on every task graph above 10 MB, and our graphs carry small broadcasts; silence it a bit higher.
LARGE_GRAPH = "50MB"
# A worker that dies while running a task is tried again elsewhere this many times before the run fails
# (Dask's own default, stated here so the manifest and the README can say it).
ALLOWED_FAILURES = 3
CONNECT_TIMEOUT_S = 30
WORKER_SETUP = "gpuclust.distributed.worker_setup"  # workers leave Ctrl-C to gpuclust (see that module)
# Closing is bounded: a signal while a LocalCluster closes once left the run hanging. After these, the
# worker processes the cluster spawned are killed.
CLIENT_CLOSE_S = 10
CLUSTER_CLOSE_S = 20


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
    if config.memory_limit:
        memory = config.memory_limit
    else:
        from gpuclust.config import MIN_WORKER_MEMORY

        share = int(0.9 * total_memory_bytes() / workers)
        if share < MIN_WORKER_MEMORY:
            raise UsageError(f"{workers} workers would get {share // 2**20} MiB each, below the "
                             f"{MIN_WORKER_MEMORY // 2**20} MiB a worker needs; give fewer --workers")
        memory = f"{share // 2**20}MiB"
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
              "memory_limit": sizes.memory_limit, "dashboard_address": None, "silence_logs": 50,
              "preload": [WORKER_SETUP]}
    if gpus:
        from dask_cuda import LocalCUDACluster

        # One worker per GPU; RMM pool for cuDF/cuML; cuDF's own spilling to host (the recommended way
        # for dask_cudf work) instead of dask-cuda's whole-object device LRU.
        cluster = LocalCUDACluster(  # rapids-contract: waive preload is a worker keyword LocalCluster forwards
            n_workers=min(sizes.workers, gpus), threads_per_worker=sizes.threads_per_worker,
                                   memory_limit=sizes.memory_limit, rmm_pool_size=0.5, enable_cudf_spill=True,
                                   dashboard_address=None, silence_logs=50, preload=[WORKER_SETUP])
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
        raise UsageError("--scheduler needs Dask: pip install -e '.[dask]' in the gpuclust folder (dask[distributed])") from None
    if isinstance(scheduler, Client):
        try:
            _prepare_workers(scheduler)
            yield Session(scheduler, "client", str(scheduler.scheduler.address))
        finally:
            from gpuclust.distributed.blocks import release_held

            release_held(scheduler)
        return
    received: list[int] = []
    _filter_noise()
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.admin.large-graph-warning-threshold": LARGE_GRAPH}), \
            _signals_noted(received), _failures_after_a_signal(received):
        if scheduler == "local":
            cluster = client = None
            before, known = _spawned_children(), _clusters()
            try:
                with _workers_off_the_terminal():
                    cluster, sizes, kind = start_local(config, device)
                client = Client(cluster)
                _prepare_workers(client)
                yield Session(client, kind, str(cluster.scheduler_address), sizes, cluster)
            finally:
                if cluster is None:  # a Ctrl-C inside start_local: the half-started cluster no variable holds
                    cluster = next(iter(_clusters() - known), None)
                _close(client, cluster, before)
            return
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                             "`dask scheduler` and workers with `dask worker ADDRESS`, or use --scheduler local") from None
        try:
            _prepare_workers(client)
            yield Session(client, "address", scheduler)
        finally:
            _close(client, None)


def _prepare_workers(client: Any) -> None:
    """Every worker imports the task modules before its first task (`worker_setup.TaskModules`)."""
    from gpuclust.distributed.worker_setup import TaskModules

    client.register_plugin(TaskModules(), name=TaskModules.name)


@contextlib.contextmanager
def _workers_off_the_terminal() -> Iterator[None]:
    """The worker processes a LocalCluster starts here get /dev/null as their stderr: Ctrl-C in a terminal
    reaches the whole process group, and a worker still importing (before the preloaded `worker_setup`
    ignores SIGINT) printed its KeyboardInterrupt traceback, 54-112 lines of them, around the run's one line.
    A signal mask is no help (multiprocessing's spawn clears it in the child) and ignoring SIGINT here
    would swallow a Ctrl-C meant for the run. Workers' logs are silenced anyway, and a failure of theirs
    reaches the run as the task's error; the run's own stderr is restored as the cluster is up."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _clusters() -> set[Any]:
    """The Dask clusters of this process (a LocalCluster registers itself as it starts)."""
    try:
        from distributed.deploy.spec import SpecCluster
    except ImportError:
        return set()
    return set(SpecCluster._instances)


def _close(client: Any, cluster: Any, before: set[int] | None = None) -> None:
    """Close the client, then the cluster, each within a time limit, with Ctrl-C and SIGTERM held meanwhile
    (a signal inside Dask's close once hung the run); then kill the worker processes the cluster spawned
    that are still alive. A signal that arrived while closing is delivered once they are gone, so a run
    stopped late still stops, and writes nothing."""
    quiet_dask_teardown()
    with signals_held() as held:
        for thing, limit in ((client, CLIENT_CLOSE_S), (cluster, CLUSTER_CLOSE_S)):
            if thing is None:
                continue
            with contextlib.suppress(Exception):  # best effort; what outlives it is killed below
                thing.close(timeout=limit)
        if cluster is not None:  # this was its close: Dask's own at exit, with its loop gone, printed a traceback
            with contextlib.suppress(Exception):
                cluster.shutdown_on_close = False
        if before is not None:
            _kill_spawned(before)
    if held:  # delivered now to the handler it was meant for (the CLI's: exit 130 or 143, one line)
        signal.raise_signal(held[0])


@contextlib.contextmanager
def _signals_noted(received: list[int]) -> Iterator[None]:
    """Note each Ctrl-C and SIGTERM, then hand it to the handler there was (main thread only). Where its
    exception is raised inside a finalizer (a GC callback in Dask), Python swallows it and prints "Exception
    ignored in ..." with a traceback before the run's one line: that print is dropped, the stop having been
    noted (`_failures_after_a_signal` raises it again); any other unraisable exception prints as before."""
    previous: dict[int, Any] = {}
    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if not (received and isinstance(info.exc_value, KeyboardInterrupt)):
            previous_hook(info)

    def note(signum: int, frame: Any) -> None:
        received.append(signum)
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                previous[sig] = signal.signal(sig, note)
        sys.unraisablehook = unraisable
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if sys.unraisablehook is unraisable:
            sys.unraisablehook = previous_hook


@contextlib.contextmanager
def _failures_after_a_signal(received: list[int]) -> Iterator[None]:
    """A failure after a signal is the signal's doing: its KeyboardInterrupt can be swallowed where Python
    ignores exceptions (a GC callback inside Dask), and the process-group signal kills the workers, so the
    next gather fails ('lost dependencies', 'Nanny failed to start'). Report the stop, not that failure;
    and where nothing failed after a swallowed signal (the workers' part was done), stop all the same: a
    SIGTERM in the cluster stage once let the run finish and exit 0."""
    from gpuclust.errors import Interrupted

    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception:
        if not received:
            raise
        raise Interrupted(received[0]) from None
    if received:  # noted, but its exception was swallowed on the way (a GC callback): the run still stops
        raise Interrupted(received[0])


def _spawned_children() -> set[int]:
    """This process's multiprocessing-spawned children now (Dask's worker processes are such children)."""
    try:
        import psutil

        found = set()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any("spawn_main" in part or "forkserver" in part for part in child.cmdline()):
                    found.add(child.pid)
        return found
    except Exception:  # noqa: BLE001 - psutil is a dependency of distributed; without it nothing is killed
        return set()


def _kill_spawned(before: set[int]) -> None:
    """Kill the spawned children that appeared since `before` (the LocalCluster's workers) and outlived
    its close; only those, never a process gpuclust did not start."""
    import psutil

    for pid in _spawned_children() - before:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


class _DaskTeardownNoise(logging.Filter):
    """asyncio's 'Task exception was never retrieved' for Dask's own coroutines (AllExit, closed comms), logged
    when a run is stopped mid-gather: 25 lines the user cannot act on, after the one that matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith(("Task exception was never retrieved", "Future exception was never retrieved")):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not ("/distributed/" in message or "/tornado/" in message or _raised_in_dask(exc))


def _raised_in_dask(exc: BaseException | None) -> bool:
    """Whether the exception, or one it was raised from, passed through Dask's or tornado's code."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__module__.split(".")[0] in ("distributed", "tornado"):
            return True
        tb = exc.__traceback__
        while tb is not None:
            if any(part in tb.tb_frame.f_code.co_filename for part in ("/distributed/", "/tornado/")):
                return True
            tb = tb.tb_next
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


_NOISE = _DaskTeardownNoise()


def _filter_noise() -> None:
    logger = logging.getLogger("asyncio")
    if _NOISE not in logger.filters:
        logger.addFilter(_NOISE)


def quiet_dask_teardown() -> None:
    """Install the filter (once) and keep Dask's client-side loggers to errors that stop the run."""
    _filter_noise()
    for name in ("distributed.client", "distributed.deploy", "distributed.core", "distributed.comm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
