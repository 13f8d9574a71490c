"""What each worker process does before it runs gpuclust's tasks.

Ctrl-C in a terminal reaches the whole process group. The gpuclust process stops the run and closes the
cluster, which ends its workers; a worker that took the SIGINT itself printed a 40-line
KeyboardInterrupt traceback from its event loop after the one line that matters. So workers of a
LocalCluster gpuclust starts ignore SIGINT and leave stopping to gpuclust (Dask's `preload`; SIGTERM and
the nanny's kill still end them).

Every worker, of any cluster, imports the modules its tasks need in one thread before it runs one
(`TaskModules`, a worker plugin the session registers): a worker restarted mid-run (the OOM killer, a
killed process) had two task threads import scipy.sparse at once, one from a task, one unpickling a
sparse matrix, and Python's import locks failed the task with "_DeadlockError: deadlock detected by
_ModuleLock('scipy.sparse._csr')".
"""

from __future__ import annotations

import importlib
import signal
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

# The task modules (each imports what its functions use) and the CPU backend's lazy import.
TASK_MODULES = ("scipy.sparse", "gpuclust.distributed.fit", "gpuclust.distributed.features",
                "gpuclust.distributed.explain", "gpuclust.distributed.kmeans", "gpuclust.distributed.svd",
                "gpuclust.distributed.prepare")


def dask_setup(worker: Any = None) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    import_task_modules()


def import_task_modules() -> None:
    for name in TASK_MODULES:
        importlib.import_module(name)


class TaskModules(WorkerPlugin):
    """Registered once per session (by name, so again is a no-op); set up on every worker, those that
    join or are restarted later included, before they take tasks."""

    name = "gpuclust-task-modules"

    def setup(self, worker: Any) -> None:
        import_task_modules()
