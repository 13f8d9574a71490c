"""Preloaded into each worker process of a LocalCluster gpuclust starts (Dask's `preload`).

Ctrl-C in a terminal reaches the whole process group. The gpuclust process stops the run and closes the
cluster, which ends its workers; a worker that took the SIGINT itself printed a 40-line
KeyboardInterrupt traceback from its event loop after the one line that matters. So workers ignore
SIGINT and leave stopping to gpuclust (SIGTERM and the nanny's kill still end them).
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any = None) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
