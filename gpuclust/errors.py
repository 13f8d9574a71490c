"""Errors a user can fix.

A `UsageError` is bad input or an impossible request: the CLI prints its message on one line and
exits with code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UsageError(ValueError):
    """Bad input or parameter; the message says what is wrong and how to fix it."""


class DeviceUnavailableError(UsageError):
    """The requested device or accelerator cannot be used on this machine."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the command stops, leaves nothing behind, and exits 128 + the signal number."""

    def __init__(self, signum: int = 2) -> None:
        super().__init__(signum)
        self.signum = signum


def require_file(path: Path, what: str) -> None:
    """A missing path and a directory are different mistakes; the message says which, and what to give."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not {what}; give the path of the file itself")
    if not path.is_file():
        raise UsageError(f"file not found: {path}")


class InputWarning(UserWarning):
    """Something odd in the input that gpuclust worked around (rows dropped, ids or units reinterpreted);
    the CLI prints each as one line after a successful command."""
