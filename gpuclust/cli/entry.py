"""The `gpuclust` console script: signal handling first, the heavy imports after.

Ctrl-C or SIGTERM during the second or so of imports must still exit 130 (143) with one line, as it
does once a command runs (`gpuclust.cli.app.main`)."""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    from gpuclust.errors import Interrupted

    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        from gpuclust.cli.app import main as app_main
        from gpuclust.cli.app import quiet_teardown
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        sys.stderr.write(f"{'terminated' if signum == signal.SIGTERM else 'interrupted'}: stopped; "
                         "nothing was written\n")
        sys.stderr.flush()
        import atexit

        atexit._run_exitfuncs()
        os._exit(128 + int(signum))  # not sys.exit: an interrupted import can end the interpreter as -2
    try:
        app_main()
    finally:
        quiet_teardown()
