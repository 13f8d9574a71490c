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
import hashlib
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

from gpuclust.errors import Interrupted, UsageError, check_path_length, listed, write_failure

MARKER = ".gpuclust.json"
# Staging and replaced folders: .gpuclust-<hash of the target name>-<pid>-<token>[-old], short whatever the
# target's name (a 255-byte name is valid; the name itself plus a suffix would not be). Earlier versions
# wrote .<target name>.gpuclust-<pid>-<token>[-old]; those are still found, swept and restored.
_STAGING = re.compile(r"\.gpuclust-(?P<hash>[0-9a-f]{16})-(?P<pid>\d+)-[0-9a-f]{8}(-old)?")
_PRIVATE = re.compile(r"\.(?P<name>.+)\.gpuclust-(?P<pid>\d+)-[0-9a-f]{8}(-old)?")

# What this process has put in place, in order, and the staging folders open now: a Ctrl-C that lands after
# a commit names what was written in full instead of saying that nothing was.
_written: list[Path] = []
_staging_now: set[Path] = set()


def written() -> tuple[Path, ...]:
    """The output sets, and the files written outside one, that this process has put in place."""
    return tuple(_written)


def note_written(path: Path) -> None:
    """Called where an output is put in place; a file inside a staging folder is part of that set, not noted
    (a file written beside one, such as the report's page while its pictures are staged, is)."""
    where = Path(os.path.abspath(path))
    if not any(folder == where or folder in where.parents for folder in _staging_now):
        _written.append(path)


def _name_hash(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:16]


def _staging_pid(entry: str, target_name: str) -> int | None:
    """The process id in `entry` if it is a staging or replaced folder of `target_name`, else None."""
    match = _STAGING.fullmatch(entry)
    if match and match["hash"] == _name_hash(target_name):
        return int(match["pid"])
    match = _PRIVATE.fullmatch(entry)
    if match and match["name"] == target_name:
        return int(match["pid"])
    return None

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
        self._identity: tuple[int, int] | None = None

    def __enter__(self) -> Path:
        check_path_length(self.target, self.what)
        self._made = _make_parents(self.target.parent, self.what, self.target)
        try:
            with _parent_lock(self.target.parent):  # not halfway through another writer's swap
                _restore_interrupted_swap(self.target)  # before any check or sweep
                self._check_target()
        except UsageError:
            self._discard()
            raise
        _sweep_stale(self.target)
        self.staging = self.target.parent / f".gpuclust-{_name_hash(self.target.name)}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.staging.mkdir()
            _write_marker(self.staging, self.kind)
            info = os.stat(self.staging)
            self._identity = (info.st_dev, info.st_ino)
        except OSError as exc:
            self._discard()
            raise write_failure(exc, self.what, self.target) or UsageError(
                f"cannot write to {self.what} {self.target}: {exc.strerror or exc}") from None
        _staging_now.add(self.staging)
        return self.staging

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _staging_now.discard(self.staging)
        if exc_type is not None:
            self._discard()
            failure = write_failure(exc, self.what, self.target, names=False) if exc is not None else None
            if failure is not None:  # a full disk or ulimit -f: one line, the old set untouched
                raise failure from None
            return
        try:
            self._commit()
        except BaseException as error:
            self._discard()
            failure = write_failure(error, self.what, self.target, names=False)
            if failure is not None:
                raise failure from None
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
            shown = listed(foreign)
            raise UsageError(f"{self.what} {target} holds files gpuclust did not write ({shown}); "
                             "give a new or empty folder: gpuclust never deletes or overwrites what it did not write")

    def _commit(self) -> None:
        assert self.staging is not None
        self._check_staging()
        with _parent_lock(self.target.parent), signals_held() as held:
            self._check_target()  # again: another writer may have landed meanwhile
            aside = self.staging.with_name(self.staging.name + "-old")
            replaced = self.target.exists()
            swapped = False
            try:
                if replaced:
                    swapped = _swap(self.staging, self.target, aside)
                else:
                    os.rename(self.staging, self.target)
            except OSError as exc:
                if replaced and aside.exists() and not self.target.exists():
                    os.rename(aside, self.target)
                raise UsageError(f"cannot move the outputs into {self.target}: {exc.strerror or exc}") from None
            old = self.staging if swapped else aside  # where the replaced set now lies
            if held:  # interrupted while swapping: put the old set back, then stop
                if swapped:
                    _exchange(self.staging, self.target)
                else:
                    os.rename(self.target, self.staging)
                    if replaced:
                        os.rename(aside, self.target)
                raise Interrupted(held[0])
            note_written(self.target)  # with the signals still held: a stop from here on finds it noted
        self.staging = None
        self._made = []
        if replaced:
            shutil.rmtree(old, ignore_errors=True)

    def _check_staging(self) -> None:
        """The staging folder must be the one made on entry: if a folder above it was deleted meanwhile, a
        writer may have made it again, without the marker and with only part of the outputs."""
        assert self.staging is not None
        try:
            info = os.stat(self.staging)
            same = (info.st_dev, info.st_ino) == self._identity and (self.staging / MARKER).is_file()
        except OSError:
            same = False
        if not same:
            raise UsageError(f"the folder holding {self.what} {self.target} was removed or replaced while the "
                             "command ran; nothing was written: run it again")

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
                      inputs: Mapping[str, str | Path | None] | None = None, kind: str | None = None,
                      suffixes: tuple[str, ...] = ()) -> Path:
    """A single output file: a name of the command's own format (`suffixes`), never a file the same
    command reads (`inputs`: flag -> path, e.g. {"--events": events}), and it replaces only a file that
    this same kind of output wrote (`kind`, as `file_mark` marks it). Checked before the work."""
    check_path_length(path, what)
    path = Path(os.path.abspath(path))
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{what} {path} needs a {' or '.join(suffixes)} name (what this command writes), e.g. "
                         f"{path.with_suffix(suffixes[0])}")
    for flag, source in (inputs or {}).items():
        if source is not None and overlaps(path, Path(source)):
            folder = Path(source).is_dir()
            where = "inside the folder of" if folder else "the same file as"
            # beside the input folder: a name inside it (the old suggestion) was refused in turn
            beside = Path(os.path.abspath(source)).parent if folder else path.parent
            raise UsageError(f"{what} {path} is {where} {flag}; give {what} a file name of its own, e.g. "
                             f"{beside / ('result' + path.suffix)} (a command never writes over its own input)")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{what} {path} is not a regular file; give a file path")
    if path.exists():
        found = written_as(path)
        if found is None:
            raise UsageError(f"{what} {path} exists and gpuclust did not write it as a single output; give a new "
                             "file name: gpuclust never overwrites what it did not write")
        if kind is not None and found != kind:
            article = "an" if kind[:1] in "aeiou" else "a"
            raise UsageError(f"{what} {path} is a gpuclust {found} file, not {article} {kind} file; give a new file name: "
                             "a command replaces only a file of its own kind")
    ancestor = _existing_ancestor(path.parent, what, path)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {path}: {ancestor} is not writable")
    return path


def check_folder_of_sets(folder: str | Path, names: tuple[str, ...], what: str = "--out") -> None:
    """A folder that holds only output sets named `names` (the demo's data/ and run/), each an OutputDir
    of its own: refused when it holds anything else, so gpuclust's sets never mix with a user's files."""
    folder = Path(os.path.abspath(folder))
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UsageError(f"{what} {folder} is not a folder; give a new or empty folder")
    if not folder.exists():
        return
    foreign = sorted(name for name in os.listdir(folder) if name not in names
                     and not any(_staging_pid(name, own) is not None for own in names))
    if foreign:
        shown = listed(foreign)
        raise UsageError(f"{what} {folder} holds files gpuclust did not write ({shown}); give a new or empty folder: "
                         f"gpuclust writes {' and '.join(n + '/' for n in names)} there and never mixes them with "
                         "other files")


# Every single-file output carries this mark with the kind of output and a random id; a user's file
# does not carry it by chance (a top-level "gpuclust" key, or a run's manifest.json, is not the mark).
FILE_MARK = "gpuclust_output"
_MARK_ID = re.compile(r"[0-9a-f]{32}")
_HTML_MARK = re.compile(rb'<meta name="gpuclust-output" content="([a-z-]+) ([0-9a-f]{32})">')
_PNG_MARK = re.compile(rb"tEXtgpuclust-output\x00([a-z-]+) ([0-9a-f]{32})")


def file_mark(kind: str) -> dict[str, str]:
    """The mark of a single-file output of `kind`: a JSON object's FILE_MARK value, and (as
    `mark_text`) the text an HTML meta tag, a PNG text chunk or Parquet metadata carries."""
    import gpuclust

    return {"kind": kind, "id": secrets.token_hex(16), "version": gpuclust.__version__}


def mark_text(kind: str) -> str:
    return f"{kind} {secrets.token_hex(16)}"


def written_as(path: Path) -> str | None:
    """The kind of single-file output gpuclust wrote at `path` (its mark), or None: a JSON object with a
    FILE_MARK entry, Parquet metadata, an HTML meta tag, a PNG text chunk, or (.npy) the ids file beside it."""
    suffix = path.suffix.lower()
    with contextlib.suppress(OSError, ValueError, TypeError):
        if suffix == ".json":
            mark = json.loads(path.read_text(encoding="utf-8")).get(FILE_MARK)
            ok = isinstance(mark, dict) and isinstance(mark.get("kind"), str) and _MARK_ID.fullmatch(str(mark.get("id")))
            return mark["kind"] if ok else None
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            found = ((pq.read_schema(path).metadata or {}).get(FILE_MARK.encode()) or b"").split(b" ")
            return found[0].decode() if len(found) == 2 and _MARK_ID.fullmatch(found[1].decode()) else None
        if suffix in (".html", ".htm", ".png"):
            with path.open("rb") as fh:
                head = fh.read(4096)
            match = (_PNG_MARK if suffix == ".png" else _HTML_MARK).search(head)
            return match[1].decode() if match else None
        if suffix == ".npy":
            return written_as(path.with_suffix(".ids.json"))
    return None


# --- helpers ------------------------------------------------------------------------------------

def overlaps(target: Path, source: Path) -> bool:
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


def _swap(staging: Path, target: Path, aside: Path) -> bool:
    """Put `staging` in place of `target`. One atomic exchange where the system has it (True: the old
    set is now at `staging`); else two renames through `aside` (False), which a crash between them leaves
    without a target, and which `_restore_interrupted_swap` undoes on the next command."""
    if _exchange(staging, target):
        return True
    os.rename(target, aside)
    os.rename(staging, target)
    return False


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two paths in one step (Linux 3.15+, glibc 2.28+). False where the
    system or the file system lacks it."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _restore_interrupted_swap(target: Path) -> None:
    """A command killed between the two renames of `_swap` left the old set at its `-old` name and no
    target: put it back before anything checks or sweeps the folder."""
    if target.exists() or target.is_symlink():
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            pid = _staging_pid(entry.name, target.name)
            if pid is not None and entry.name.endswith("-old") \
                    and entry.is_dir(follow_symlinks=False) and not _alive(pid):
                os.rename(entry.path, target)
                return


def _sweep_stale(target: Path) -> None:
    """Remove staging folders of earlier commands on this target whose process is gone (killed hard)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            pid = _staging_pid(entry.name, target.name)
            if pid is not None and entry.is_dir(follow_symlinks=False) and not _alive(pid):
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
def signals_held() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM for the duration (a swap, a cluster closing): recorded, not raised, in the
    main thread; the list says whether one arrived meanwhile."""
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
