"""Atomic output: every file is written to a temporary name beside it, then renamed into place."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpuclust.errors import Interrupted, check_path_length, write_failure
from gpuclust.io.outputs import note_written, signals_held


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `path`, on failure it is removed. A full disk, a
    quota or `ulimit -f` is a UsageError naming `path` (the file there, if any, is untouched). The
    temporary name is short, so that a valid name of up to 255 bytes can be written."""
    path = Path(path)
    check_path_length(path, "output file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".gpuclust-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_failure(exc, "output file", path) or exc from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        with signals_held() as held:  # put in place and noted as one step, then any stop that arrived meanwhile
            os.replace(tmp_path, path)
            note_written(path)
        if held:
            raise Interrupted(held[0])
    except OSError as exc:
        failure = write_failure(exc, "output file", path)
        if failure is None:
            raise
        raise failure from None
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    if isinstance(obj, datetime.date | datetime.timedelta | np.datetime64 | np.timedelta64):
        return str(obj)  # what the CLI's --json printed for them before it was strict
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """NaN and infinity are not JSON: they are written as null."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def json_text(data: Any) -> str:
    """Strict JSON (NaN and infinity as null, NumPy scalars as numbers), indented, with a final newline."""
    return json.dumps(_finite(data), indent=2, default=_jsonable, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(data))


# A spreadsheet (Excel, LibreOffice, Google Sheets) runs a cell that starts with one of these as a formula
# (OWASP's CSV injection): `=HYPERLINK(...)`, `@SUM(...)`, `-2+3`, or a tab or carriage return before one.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
SPREADSHEET_GUARD = ("text cells that a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage "
                     "return) are written with a leading ' (shown as text, the quote hidden); Parquet keeps them exact")


def spreadsheet_warning(cells: dict[str, int]) -> str:
    """The one line that says which CSV cells got a leading ' (`write_csv`'s counts per column)."""
    return "warning: " + ", ".join(f"{n:,} in {column}" for column, n in cells.items()) + f": {SPREADSHEET_GUARD}"


def spreadsheet_cell(value: Any) -> Any:
    """`value` as a CSV cell a spreadsheet shows rather than runs: text starting like a formula gets a
    leading ' (plain numbers such as -5 stay as they are: a spreadsheet reads them as numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def spreadsheet_safe(frame):
    """(frame, {column: cells changed}): a pandas frame's text cells through `spreadsheet_cell`, for a CSV that
    people open in a spreadsheet. Ids, names and titles are user data: a catalogue title or a user id of
    `=HYPERLINK(...)` must not run when a marketer opens the audience file. Numeric columns are untouched."""
    import pandas as pd

    changed: dict[str, int] = {}
    out = frame
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            continue
        text = column.astype("str")  # vectorised: a million ids in well under a second
        risky = column.notna() & text.str.startswith(FORMULA_START) & ~text.str.fullmatch(_PLAIN_NUMBER.pattern)
        if risky.any():
            out = out.copy() if out is frame else out
            out[name] = column.astype("object").where(~risky, "'" + text)
            changed[str(name)] = int(risky.sum())
    return out, changed


# RFC 4180's line ending. A field holding a carriage return is quoted only where the line terminator has one:
# with pandas' "\n" an id "a\rb" was written bare, and readers split its row in two.
CSV_LINE_END = "\r\n"


def write_csv(frame, target) -> dict[str, int]:
    """A pandas frame as CSV for people and their tools (a path or an open text stream): `spreadsheet_safe`
    cells, RFC 4180 lines (CRLF; fields with a comma, quote, CR or LF quoted). Returns its counts of
    escaped cells."""
    safe, escaped = spreadsheet_safe(frame)
    safe.to_csv(target, index=False, lineterminator=CSV_LINE_END)
    return escaped


def write_parquet(path: str | Path, df) -> None:
    """Write a cuDF or pandas frame to Parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
