"""Output folders written as one unit, and never over what gpuclust did not write.

A command opens its output folder before any work (so a bad destination costs nothing), stages the
whole output set in a hidden sibling folder, and swaps it into place at the end under a lock on the
parent folder: readers and concurrent writers see the old set or the new one, never a mix, and a
failed or interrupted command leaves nothing behind. An existing folder is replaced only when it is
empty or gpuclust wrote it: it carries a marker naming the kind of output set and holds nothing but
that kind's files. Single-file outputs are replaced only when gpuclust wrote them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

from gpuclust.errors import Interrupted, UsageError

MARKER = ".gpuclust.json"
# Staging and replaced folders: .<target name>.gpuclust-<pid>-<token>[-old]
_PRIVATE = re.compile(r"\.(?P<name>.+)\.gpuclust-(?P<pid>\d+)-[0-9a-f]{8}(-old)?")

# What each kind of output folder may hold: a file (None), a folder with these file names, or a folder
# of files whose names match a pattern (a partitioned dataset: part.0.parquet, part.1.parquet, ...).
Layout = Mapping[str, "frozenset[str] | re.Pattern[str] | None"]


class OutputDir:
    """`with OutputDir(out, "run", layout) as staging:` write into `staging`; it replaces `out` on success.

    The destination is checked when the block is entered, before the caller does any work."""

    def __init__(self, target: str | Path, kind: str, layout: Layout, what: str = "--out") -> None:
        self.target = Path(os.path.abspath(target))
        self.kind = kind
        self.layout = {**layout, MARKER: None}
        self.what = what
        self.staging: Path | None = None
        self._made: list[Path] = []

    def __enter__(self) -> Path:
        self._made = _make_parents(self.target.parent, self.what, self.target)
        try:
            with _parent_lock(self.target.parent):  # not halfway through another writer's swap
                self._check_target()
        except UsageError:
            self._discard()
            raise
        _sweep_stale(self.target)
        self.staging = self.target.parent / f".{self.target.name}.gpuclust-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.staging.mkdir()
            _write_marker(self.staging, self.kind)
        except OSError as exc:
            self._discard()
            raise UsageError(f"cannot write to {self.what} {self.target}: {exc.strerror or exc}") from None
        return self.staging

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise

    # --- steps ----------------------------------------------------------------------------------

    def _check_target(self) -> None:
        target = self.target
        if target.is_symlink():
            raise UsageError(f"{self.what} {target} is a symbolic link; give a real folder")
        if not target.exists():
            return
        if not target.is_dir():
            raise UsageError(f"{self.what} {target} is a file; give a folder")
        marker = _read_marker(target / MARKER)
        other = marker.get("kind") if marker is not None else self.kind
        if other != self.kind:  # gpuclust's own, but another command's: say so rather than "did not write"
            article = "an" if str(self.kind)[:1] in "aeiou" else "a"
            raise UsageError(f"{self.what} {target} is a gpuclust {other} output, not {article} {self.kind} output; "
                             f"give a new or empty folder: gpuclust replaces only an output of the same command")
        foreign = foreign_entries(target, self.kind, self.layout)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise UsageError(f"{self.what} {target} holds files gpuclust did not write ({shown}); "
                             "give a new or empty folder: gpuclust never deletes or overwrites what it did not write")

    def _commit(self) -> None:
        assert self.staging is not None
        with _parent_lock(self.target.parent), _signals_held() as held:
            self._check_target()  # again: another writer may have landed meanwhile
            aside = self.staging.with_name(self.staging.name + "-old")
            replaced = self.target.exists()
            try:
                if replaced:
                    os.rename(self.target, aside)
                os.rename(self.staging, self.target)
            except OSError as exc:
                if replaced and aside.exists() and not self.target.exists():
                    os.rename(aside, self.target)
                raise UsageError(f"cannot move the outputs into {self.target}: {exc.strerror or exc}") from None
            if held:  # interrupted while swapping: put the old set back, then stop
                os.rename(self.target, self.staging)
                if replaced:
                    os.rename(aside, self.target)
                raise Interrupted(held[0])
        self.staging = None
        self._made = []
        if replaced:
            shutil.rmtree(aside, ignore_errors=True)

    def _discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        for folder in reversed(self._made):  # parents this command made, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made = []


def foreign_entries(folder: Path, kind: str, layout: Layout) -> list[str]:
    """Paths in `folder` that an output set of `kind` does not account for; all of them unless it is
    an empty folder or one that gpuclust wrote as `kind`."""
    entries = sorted(os.listdir(folder))
    if not entries:
        return []
    marker = _read_marker(folder / MARKER)
    if marker is None:
        return entries
    if marker.get("kind") != kind:
        return [f"{MARKER} (a gpuclust {marker.get('kind')} output, not a {kind} output)"]
    foreign = []
    for name in entries:
        path = folder / name
        if name not in layout or path.is_symlink():
            foreign.append(name)
        elif layout[name] is None:
            if not path.is_file():
                foreign.append(name)
        elif not path.is_dir():
            foreign.append(name)
        else:
            foreign += [f"{name}/{child}" for child in sorted(os.listdir(path))
                        if not _allowed(child, layout[name]) or not (path / child).is_file()
                        or (path / child).is_symlink()]
    return foreign


def check_file_target(path: str | Path, what: str = "--out",
                      inputs: Mapping[str, str | Path | None] | None = None) -> Path:
    """A single output file may replace only a file gpuclust wrote, and never one the same command reads
    (`inputs`: flag -> path, e.g. {"--events": events}): a synth or run output is gpuclust's, yet it is
    this command's data. Checked before the work."""
    path = Path(os.path.abspath(path))
    for flag, source in (inputs or {}).items():
        if source is not None and _overlaps(path, Path(source)):
            where = "inside the folder of" if Path(source).is_dir() else "the same file as"
            raise UsageError(f"{what} {path} is {where} {flag}; give {what} a file name of its own, e.g. "
                             f"{path.with_name('result' + path.suffix)} (a command never writes over its own input)")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{what} {path} is not a regular file; give a file path")
    if path.exists() and not written_by_gpuclust(path):
        raise UsageError(f"{what} {path} exists and gpuclust did not write it; give a new file name: "
                         "gpuclust never overwrites what it did not write")
    ancestor = _existing_ancestor(path.parent, what, path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: {ancestor} is not writable")
    return path


def written_by_gpuclust(path: Path) -> bool:
    """Whether a file carries gpuclust's mark: a JSON object with a `gpuclust` key, Parquet metadata,
    an HTML generator tag, a PNG Software text, or (for .npy) a companion ids file that gpuclust wrote."""
    suffix = path.suffix.lower()
    with contextlib.suppress(OSError, ValueError):
        if suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(doc, dict) and "gpuclust" in doc
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            return any(key.startswith(b"gpuclust") for key in meta)
        if suffix in (".html", ".htm"):
            with path.open("rb") as fh:
                return b'<meta name="generator" content="gpuclust' in fh.read(4096)
        if suffix == ".png":  # the Software text chunk of report.plots
            with path.open("rb") as fh:
                return b"tEXtSoftware\x00gpuclust" in fh.read(4096)
        if suffix == ".npy":
            return written_by_gpuclust(path.with_suffix(".ids.json"))
    return False


# --- helpers ------------------------------------------------------------------------------------

def _overlaps(target: Path, source: Path) -> bool:
    """Whether writing `target` would touch `source`: the same file (through links too), or a file
    inside the folder `source` (a saved model)."""
    with contextlib.suppress(OSError):
        if target.exists() and source.exists() and os.path.samefile(target, source):
            return True
        if source.is_dir():
            return Path(os.path.realpath(target)).is_relative_to(os.path.realpath(source))
    return os.path.abspath(target) == os.path.abspath(source)

def _allowed(name: str, allowed: frozenset[str] | re.Pattern[str]) -> bool:
    return bool(allowed.fullmatch(name)) if isinstance(allowed, re.Pattern) else name in allowed


def _write_marker(folder: Path, kind: str) -> None:
    import gpuclust

    (folder / MARKER).write_text(json.dumps({"gpuclust": gpuclust.__version__, "kind": kind}) + "\n")


def _read_marker(path: Path) -> dict | None:
    if not path.is_file() or path.is_symlink():
        return None
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "gpuclust" in doc:
            return doc
    return None


def _existing_ancestor(folder: Path, what: str, target: Path) -> Path:
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {what} {target}: {folder} is a file, not a folder")
    return folder


def _make_parents(folder: Path, what: str, target: Path) -> list[Path]:
    """Create the missing parent folders; returns them so a failed command can remove them again."""
    _existing_ancestor(folder, what, target)
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    made = []
    try:
        for path in reversed(missing):
            path.mkdir()
            made.append(path)
    except OSError as exc:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise UsageError(f"cannot write to {what} {target}: {exc.strerror or exc} ({exc.filename})") from None
    return made


def _sweep_stale(target: Path) -> None:
    """Remove staging folders of earlier commands on this target whose process is gone (killed hard)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            match = _PRIVATE.fullmatch(entry.name)
            if match and match["name"] == target.name and entry.is_dir(follow_symlinks=False) \
                    and not _alive(int(match["pid"])):
                shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def _parent_lock(folder: Path) -> Iterator[None]:
    """An advisory lock on the parent folder: concurrent gpuclust writers swap one at a time."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM during the swap; the list says whether one arrived meanwhile."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            previous[sig] = signal.signal(sig, lambda signum, _frame: held.append(signum))
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
