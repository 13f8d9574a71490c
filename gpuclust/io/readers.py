"""Parquet, CSV/TSV (also .gz), JSON Lines and JSON arrays of records into cuDF or pandas, renamed to the
canonical schema.

Column names are checked before the data is read, so a misnamed column costs milliseconds and gets
a message listing the columns that are there.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

from gpuclust import schema
from gpuclust.columns import REQUIRED_EVENTS, check_named_item_columns, event_columns, item_columns
from gpuclust.config import ColumnMap
from gpuclust.errors import UsageError, listed, require_file
from gpuclust.preprocess.parse import text_ids

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".gzip"):
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise UsageError(
            f"cannot tell the format of {path}: name it .parquet, .csv, .tsv, .jsonl or .json (each also .gz)"
        )
    return fmt


def _columns_in(path: Path, fmt: str) -> list[str] | None:
    """Column names without reading the data; None where the format has no cheap header."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise UsageError(f"{path} is not a readable Parquet file ({exc}); re-export it or check the path") from None
    if fmt == "csv":
        import pandas as pd

        try:
            return list(pd.read_csv(path, nrows=0, sep=_separator(path)).columns)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"{path} is not a readable CSV file ({exc})") from None
    return None


def _separator(path: Path) -> str:
    return "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","


def read_table(path: str | Path, frame: ModuleType, columns: list[str] | None = None,
               required: dict[str, str] | None = None, hints: dict[str, str] | None = None,
               check: Callable[[list[str]], None] | None = None, ids: tuple[str, ...] = ()):
    """Read a file with the frame library (cuDF or pandas), optionally only some columns.

    `required` maps canonical names to the file's names; a missing one is a UsageError that lists the
    columns the file does have and the flag that maps it (`hints`). `check`: a further test of the file's
    column names (a UsageError where they will not do), run with `required`'s, before the data is read
    where the format has a header. `ids`: the file's id columns; a text format's are read as the text they
    hold (`text_ids`), not as the reader guesses.
    """
    path = Path(path)
    require_file(path, "a Parquet, CSV, TSV or JSON file")
    fmt = file_format(path)
    present = _columns_in(path, fmt)
    if present is not None:
        _require(present, path, required or {}, hints or {}, check)
        if columns is not None:
            columns = [c for c in columns if c in present]
    try:
        if fmt == "parquet":
            df = frame.read_parquet(path, columns=columns)
        elif fmt == "csv":
            as_text = {c: "str" for c in ids if c in present}
            df = frame.read_csv(path, usecols=columns, sep=_separator(path), dtype=as_text or None)
        else:
            df = _read_json(path, frame)
            _require(list(df.columns), path, required or {}, hints or {}, check)
            if columns is not None:
                df = df[[c for c in columns if c in df.columns]]
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - report unreadable data as the user's to fix
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        first = first if len(first) <= 300 else first[:300] + "..."  # a parser may quote the whole line
        fix = "; save it as UTF-8 text" if isinstance(exc, UnicodeDecodeError) else ""
        raise UsageError(f"could not read {path} as {fmt}: {first}{fix}") from None
    if fmt != "parquet":
        for column in (c for c in ids if c in df.columns):
            df[column] = text_ids(df[column], frame)
    return df


def _read_json(path: Path, frame: ModuleType):
    """JSON Lines (one object a line) or one JSON array of objects, told apart by the first character; a
    UTF-8 byte-order mark is skipped (the JSON readers refuse it, the CSV ones skip it). Values keep
    JSON's own types (`_json_lines`)."""
    opener = gzip.open if path.suffix.lower() in (".gz", ".gzip") else open
    with opener(path, "rb") as f:
        bom = f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8
        f.seek(len(codecs.BOM_UTF8) if bom else 0)
        head = f.read(4096).lstrip()
        if head[:1] == b"[":  # an array of records: read whole (an array's "columns" are its records)
            f.seek(len(codecs.BOM_UTF8) if bom else 0)
            raw = f.read()
            try:
                return _records(frame.read_json(io.BytesIO(raw), orient="records", dtype=False), path)
            except ValueError as exc:  # an integer beyond 64 bits: Python's json reads it (`_python_json_lines`)
                if "too big" not in str(exc) or frame.__name__ != "pandas":
                    raise
                return _records(frame.DataFrame.from_records(json.loads(raw.decode("utf-8"))), path)
        if head[:1] not in (b"{", b""):
            raise UsageError(f"{path} is neither JSON Lines (one object a line) nor a JSON array of objects: "
                             f"it starts with {head[:20].decode('utf-8', 'replace')!r}")
        if not bom:
            return _json_lines(path, frame)
        f.seek(len(codecs.BOM_UTF8))
        return _json_lines(io.BytesIO(f.read()), frame)


def _json_lines(source: Path | io.BytesIO, frame: ModuleType):
    """JSON Lines with JSON's own types. pandas guesses types by default: text '007' becomes the number 7,
    and a column named like 'timestamp' becomes dates by one epoch unit for the whole column (seconds
    beside milliseconds read as January 1970); dtype=False keeps JSON's types for the pipeline to read.
    cuDF's own JSON Lines engine keeps them already and refuses dtype=False (its arrays go through pandas)."""
    if frame.__name__ == "cudf":
        return frame.read_json(source, lines=True)
    try:
        return frame.read_json(source, lines=True, dtype=False)
    except ValueError as exc:
        if "too big" not in str(exc):
            raise
    return _python_json_lines(source)


def _python_json_lines(source: Path | io.BytesIO):
    """JSON Lines through Python's json module: pandas' parser refuses an integer beyond 64 bits ("Value is
    too big!"), which Python reads whole, so an id wider than int64 is text here as on the service
    (`parse.normalise_ids`), not a refused file. Slower; only files holding such a number come here."""
    if isinstance(source, Path):
        opener = gzip.open if source.suffix.lower() in (".gz", ".gzip") else open
        with opener(source, "rb") as f:
            raw = f.read()
    else:
        raw = source.getvalue()
    import pandas as pd

    return pd.DataFrame.from_records([json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()])


def _records(df, path: Path):
    """An array of scalars or of arrays reads as positional columns 0, 1, ...: not records."""
    if len(df.columns) and all(isinstance(c, int) for c in df.columns):
        raise UsageError(f"{path} holds a JSON array whose elements are not objects: give one object per "
                         'record, e.g. [{"user_id": 1, "item_id": 7, ...}, ...]')
    return df


def _require(present: list[str], path: Path, wanted: dict[str, str], hints: dict[str, str],
             check: Callable[[list[str]], None] | None = None) -> None:
    missing = {canonical: src for canonical, src in wanted.items() if src not in present}
    if missing:
        found = listed(present, limit=12) or "(none)"
        how = "; ".join(f"map {c} with {hints[c]} NAME" if c in hints else f"name the column holding {c} {src!r}"
                        for c, src in missing.items())  # a column without a flag (truth's group) is renamed
        if len(present) == 1 and any(sep in str(present[0]) for sep in ";|\t"):
            how = "the file seems separated by something other than commas: give a comma-separated .csv or a .tsv"
        raise UsageError(
            f"column(s) {', '.join(map(repr, missing.values()))} not found in {path}; columns found: {found}; {how}"
        )
    if check is not None:
        check([str(c) for c in present])


EVENT_FLAGS = {
    schema.USER: "--user-col",
    schema.ITEM: "--item-col",
    schema.EVENT: "--event-col",
    schema.TIME: "--time-col",
}


def read_events(path: str | Path, frame: ModuleType, columns: ColumnMap | None = None):
    """Events with canonical names: user_id, item_id, event_type, timestamp and, if present, value."""
    if Path(path).is_dir():  # a dataset folder is what the Dask path reads: say so, not only "give a file"
        raise UsageError(f"{path} is a directory, not an events file: give the path of one file (run and assign "
                         "read a folder of Parquet files as one dataset on a Dask cluster, with --scheduler local)")
    columns = columns or ColumnMap()
    mapping = event_columns(columns)
    wanted = {name: mapping[name] for name in REQUIRED_EVENTS}
    optional = {schema.VALUE: mapping[schema.VALUE]}
    df = read_table(path, frame, list(wanted.values()) + list(optional.values()), wanted, EVENT_FLAGS,
                    ids=(wanted[schema.USER], wanted[schema.ITEM]))
    keep = {src: dst for dst, src in {**wanted, **optional}.items() if src in df.columns}
    return df[list(keep)].rename(columns=keep)


def read_items(path: str | Path, frame: ModuleType, columns: ColumnMap | None = None):
    """Items with canonical names: item_id plus whichever of category, price and text columns exist."""
    columns = columns or ColumnMap()
    mapping = item_columns(columns)
    wanted = {schema.ITEM: mapping[schema.ITEM]}
    optional = {schema.CATEGORY: mapping[schema.CATEGORY], schema.PRICE: mapping[schema.PRICE]}
    named = partial(check_named_item_columns, columns=columns, where=str(path))  # before the file is read whole
    df = read_table(path, frame, required=wanted, hints={schema.ITEM: "--item-key-col"}, check=named,
                    ids=(wanted[schema.ITEM],))
    text = [c for c in columns.text if c in df.columns]
    keep = {src: dst for dst, src in {**wanted, **optional}.items() if src in df.columns}
    return df[list(keep) + [c for c in text if c not in keep]].rename(columns=keep)  # one row per id: `keyed_items`


def read_truth(path: str | Path, frame: ModuleType, user_col: str = schema.USER, group_col: str = "group"):
    """Known groups for evaluation: user_id, group."""
    df = read_table(path, frame, required={schema.USER: user_col, "group": group_col},
                    hints={schema.USER: "--user-col"}, ids=(user_col,))
    return df[[user_col, group_col]].rename(columns={user_col: schema.USER, group_col: "group"})
