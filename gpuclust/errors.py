"""Errors a user can fix.

A `UsageError` is bad input or an impossible request: the CLI prints its message on one line and
exits with code 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
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


def _special_kind(path: Path) -> str | None:
    """What a path that exists but is no regular file or folder is, in words; None if it does not exist."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken symbolic link" if os.path.islink(path) else None
    for test, words in ((stat.S_ISFIFO, "a named pipe (FIFO)"),
                        (stat.S_ISCHR, "a character device (such as /dev/null or /dev/urandom)"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "not a regular file"


def require_file(path: Path, what: str) -> None:
    """A missing path and a directory are different mistakes; the message says which, and what to give."""
    check_path_length(path, "the file")
    if path.is_dir():
        raise UsageError(f"{path} is a directory, not {what}; give the path of the file itself")
    if not path.is_file():
        special = _special_kind(path)  # stat only: a FIFO is never opened, so nothing waits on a writer
        if special:
            raise UsageError(f"{path} is {special}, not {what}; give a regular file")
        raise UsageError(f"file not found: {path}")


def listed(names, limit: int = 5, sep: str = ", ") -> str:
    """The first `limit` names and how many more: a message stays one readable line whatever the input."""
    names = [str(n) for n in names]
    more = len(names) - limit
    return sep.join(names[:limit]) + (f" and {more} more" if more > 0 else "")


class InputWarning(UserWarning):
    """Something odd in the input that gpuclust worked around (rows dropped, ids or units reinterpreted);
    the CLI prints each as one line after a successful command."""


class CatalogueWarning(InputWarning):
    """Few events have their item in the items table: the two files likely key items differently."""


class ResultWarning(InputWarning):
    """A result worth a second look, with what to try (a k chosen at the edge of the range tried, most
    users left in noise); printed by the CLI like the input warnings."""


class DroppedRowsWarning(InputWarning):
    """Rows of the input were dropped (bad values, unknown event types, duplicates, an adapter's filters):
    every such drop is one of these, with the count, why, and what to change to keep the rows."""


class _NoExample:
    """No example value to show (None is a value). Pickles as itself: Dask partitions send it back."""

    def __reduce__(self) -> str:
        return "NO_EXAMPLE"


NO_EXAMPLE = _NoExample()


def dropped_message(n: int, total: int, why: str, example: object = NO_EXAMPLE, fix: str | None = None,
                    what: str = "events") -> str:
    """The one wording of a dropped-row warning: how many of how many, why, an example, and the fix."""
    share = f" ({n / total:.1%})" if total else ""
    text = f"dropped {n:,} of {total:,} {what}{share}: {why}"
    if example is not NO_EXAMPLE:
        text += f", e.g. {example!r}"
    return text + (f"; {fix}" if fix else "")


def warn_dropped(n: int, total: int, why: str, example: object = NO_EXAMPLE, fix: str | None = None,
                 what: str = "events") -> None:
    """Warn (a `DroppedRowsWarning`) that `n` of `total` rows were dropped; nothing when `n` is 0. Every
    step that drops rows the user did not ask to drop goes through here (the CLI prints it as one line)."""
    if n > 0:
        import warnings

        warnings.warn(dropped_message(n, total, why, example, fix, what), DroppedRowsWarning, stacklevel=3)


# A write that failed for want of room or of a limit: what the user must give the command to succeed.
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "a file would pass the file size limit (ulimit -f)"}


class OutOfRoom(UsageError):
    """A write failed for want of room (disk, quota, `ulimit -f`): never a reason to carry on without
    that output (a run must not finish without its model), and an outer output set re-words it with its
    own path."""

    def __init__(self, message: str, errno_: int) -> None:
        super().__init__(message)
        self.errno_ = errno_


def write_failure(exc: BaseException, what: str, path: str | Path | None, names: bool = True) -> UsageError | None:
    """A full disk, a used-up quota, a file size limit or (`names`) a too-long name while writing `path`,
    as the one line the user needs (where, and what to give it); None for any other error."""
    if isinstance(exc, OutOfRoom):
        code = exc.errno_
    elif isinstance(exc, OSError):
        code = exc.errno or 0
    else:
        return None
    where = f"{what} {path}" if path is not None else what
    if code == errno.ENAMETOOLONG and names:
        return UsageError(f"cannot write {where}: a name in that path is too long for the file system (at most 255 "
                          "bytes a name, 4096 a path); give a shorter path")
    reason = _NO_ROOM.get(code)
    if reason is None:
        return None
    room = ""
    if code != errno.EFBIG and path is not None:
        folder = Path(os.path.abspath(path))
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            room = f" ({shutil.disk_usage(folder).free / 2**20:,.1f} MiB free there)"
        except OSError:
            room = ""
    need = "raise the limit (ulimit -f unlimited)" if code == errno.EFBIG else "free space on that disk"
    return OutOfRoom(f"cannot write {where}: {reason}{room}; {need} or write to another disk, and run again; "
                     "nothing was written there and earlier outputs are kept", code)


def check_path_length(path: str | Path, what: str) -> None:
    """A path the file system cannot hold is named before any work, not found by a traceback later."""
    text = os.fsencode(os.path.abspath(path))
    longest = max((len(part) for part in text.split(b"/")), default=0)
    if longest > 255:
        raise UsageError(f"{what} {str(path)[:60]}... has a name of {longest} bytes; the file system allows at most "
                         "255 a name: give a shorter name")
    if len(text) >= 4096:
        raise UsageError(f"{what} {str(path)[:60]}... is a path of {len(text):,} bytes; the system allows at most "
                         "4,095: give a shorter path")
