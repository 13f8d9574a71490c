"""Errors a user can fix.

A `UsageError` is bad input or an impossible request: the CLI prints its message on one line and
exits with code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input or parameter; the message says what is wrong and how to fix it."""


class DeviceUnavailableError(UsageError):
    """The requested device or accelerator cannot be used on this machine."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the command stops, leaves nothing behind, and exits 128 + the signal number."""

    def __init__(self, signum: int = 2) -> None:
        super().__init__(signum)
        self.signum = signum
