"""The `gpuclust` console script: signal handling first, the heavy imports after.

Ctrl-C or SIGTERM during the second or so of imports must still exit 130 (143) with one line, as it
does once a command runs (`gpuclust.cli.app.main`)."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    from gpuclust.errors import Interrupted

    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        from gpuclust.cli.app import main as app_main
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        sys.stderr.write(f"{'terminated' if signum == signal.SIGTERM else 'interrupted'}: stopped; "
                         "nothing was written\n")
        sys.exit(128 + int(signum))
    try:
        app_main()
    finally:
        # The command is over (its outputs are in place, or it was stopped): a Ctrl-C during the
        # interpreter's teardown, where Python restores the default handler, must not turn a finished
        # run into a death by signal (exit -2); nor SIGTERM (-15).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
