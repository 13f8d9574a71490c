"""What differs by device on a Dask cluster, decided here and in `cluster.py` only: the lazy frame library
(dask.dataframe over pandas, or dask_cudf over cuDF) and how an input becomes a lazy partitioned frame.

Inputs at scale are Parquet datasets: one file, a folder (hive partitions too) or a glob. The schema
of every file (its footer, cheap) is checked before any work is scheduled, so a missing column, a
column of another kind than in the first file, or a file that is not Parquet is one line naming the
file and exit 2, as on the single-process path; the workers would otherwise fail deep in the shuffle.
Files whose name starts with '.' or '_' (hidden files, `_SUCCESS`, `_metadata`) are not data and are
skipped, as Spark and pyarrow skip them. Other inputs (CSV, JSON Lines, an
adapter's raw log) are read by the single-process readers and then partitioned.
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuclust import schema
from gpuclust.config import ColumnMap
from gpuclust.errors import UsageError
from gpuclust.io.readers import EVENT_FLAGS, _require

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
# Rows per user partition after the shuffle when the partition count is not given: small enough that a
# partition's preprocessing copies stay well inside a worker's memory, large enough that per-task
# overhead is noise.
ROWS_PER_PARTITION = 1_500_000


def lazy_frames(device: str):
    """dask_cudf on CUDA workers where it is installed, dask.dataframe (pandas partitions) otherwise."""
    if device == "cuda":
        from gpuclust import accelerators

        if accelerators.cudf().usable:
            import dask_cudf

            return dask_cudf
    import dask.dataframe as dd

    return dd


def is_lazy_frame(df: Any) -> bool:
    return type(df).__module__.split(".")[0] in ("dask", "dask_cudf", "dask_expr")


@dataclass
class ParquetSource:
    """A Parquet file, folder or glob: its files, the first fragment's columns, and the row count."""

    path: str
    files: list[str]
    columns: list[str]
    rows: int


def parquet_source(path: str | Path) -> ParquetSource | None:
    """The dataset at `path` if it is Parquet (a .parquet file, a folder of them, or a glob); None for
    other formats. The first fragment's schema is read here; a broken first file is a UsageError."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = sorted(glob.glob(text, recursive=True))
        if not files:
            raise UsageError(f"no file matches {text}; check the pattern")
    elif Path(text).is_dir():
        files = sorted(str(p) for p in Path(text).rglob("*") if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES
                       and not any(part.startswith((".", "_")) for part in p.relative_to(text).parts))
        if not files:
            raise UsageError(f"{text} is a folder without Parquet files (*.parquet); give a Parquet dataset folder, "
                             "a glob such as 'data/*.parquet', or a file")
    else:
        if Path(text).suffix.lower() not in PARQUET_SUFFIXES:
            return None
        if not Path(text).is_file():
            raise UsageError(f"file not found: {text}")
        files = [text]
    import pyarrow.dataset as ds

    try:
        # The files found (a folder's other files, a README or a run's JSON, are no part of it), with hive
        # keys read from their paths below the folder.
        folder = {"partitioning": "hive", "partition_base_dir": text} if Path(text).is_dir() else {}
        dataset = ds.dataset(files, format="parquet", **folder)
        columns = list(dataset.schema.names)  # the first fragment's schema (plus hive partition keys)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise UsageError(f"{files[0]} is not a readable Parquet file ({str(exc).splitlines()[0]}); re-export it "
                         "or check the path") from None
    rows = _row_count(dataset, files, text)
    return ParquetSource(text, files, columns, rows)


def _row_count(dataset: Any, files: list[str], path: str) -> int:
    """Rows from the footers only; a corrupt file further in is a UsageError naming it."""
    try:
        return int(dataset.count_rows())
    except Exception as exc:  # noqa: BLE001
        import pyarrow.parquet as pq

        for f in files:
            try:
                pq.read_metadata(f)
            except Exception as inner:  # noqa: BLE001
                raise UsageError(f"{f} is not a readable Parquet file ({str(inner).splitlines()[0]})") from None
        raise UsageError(f"the Parquet dataset {path} cannot be read ({exc})") from None


def event_columns(columns: ColumnMap) -> tuple[dict[str, str], dict[str, str]]:
    wanted = {schema.USER: columns.user_id, schema.ITEM: columns.item_id, schema.EVENT: columns.event_type,
              schema.TIME: columns.timestamp}
    return wanted, {schema.VALUE: columns.value}


def read_events_lazy(path: str | Path, columns: ColumnMap, device: str) -> tuple[Any, int, str]:
    """(lazy frame with canonical columns, row count, format) for a Parquet dataset; None frame for other
    formats, which the caller reads with the single-process readers."""
    source = parquet_source(path)
    if source is None:
        return None, 0, "other"
    wanted, optional = event_columns(columns)
    _require(source.columns, Path(source.files[0]), wanted, EVENT_FLAGS)
    keep = {src: dst for dst, src in {**wanted, **optional}.items() if src in source.columns}
    hive_keys = check_file_schemas(source.files, list(keep))
    frames = lazy_frames(device)
    # The files found (hidden and '_' files left out), unless hive keys live in the folder names.
    target = source.path if hive_keys else source.files
    df = frames.read_parquet(target, columns=list(keep))
    return df.rename(columns=keep), source.rows, "parquet"


def column_kind(kind: Any) -> str:
    """What Dask's shuffle can put together: integer and float widths, timestamp units and string
    flavours mix; a number, a string, a timestamp and a categorical (dictionary) do not."""
    import pyarrow as pa

    t = pa.types
    if t.is_integer(kind) or t.is_floating(kind) or t.is_decimal(kind):
        return "number"
    if t.is_string(kind) or t.is_large_string(kind):
        return "string"
    if t.is_timestamp(kind) or t.is_date(kind):
        return "timestamp"
    if t.is_dictionary(kind):
        return "categorical"
    if t.is_null(kind):
        return "null"
    return str(kind)


def check_file_schemas(files: list[str], columns: list[str]) -> set[str]:
    """Every file of the dataset has `columns`, of the kind the first file has (footers only). Returns the
    columns that come from hive folder names, not from the files."""
    import pyarrow.parquet as pq

    def schema_of(path: str) -> Any:
        try:
            return pq.read_schema(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise UsageError(f"{path} is not a readable Parquet file ({str(exc).splitlines()[0]}); re-export it, "
                             "or move it out of the dataset") from None

    first = schema_of(files[0])
    hive_keys = {c for c in columns if c not in first.names}
    kinds = {c: first.field(c).type for c in columns if c in first.names}
    for path in files[1:]:
        schema = schema_of(path)
        for column, kind in kinds.items():
            if column not in schema.names:
                raise UsageError(f"{path} has no column {column!r}, which {files[0]} has; every file of the dataset "
                                 "needs the same columns (re-export it, or move it out of the dataset)")
            other = schema.field(column).type
            if "null" not in (column_kind(kind), column_kind(other)) and column_kind(other) != column_kind(kind):
                raise UsageError(f"{path}: column {column!r} is {other} where {files[0]} has {kind}; every file of "
                                 "the dataset needs the same kind of value in a column (re-export it with the same "
                                 "types)")
    return hive_keys


def from_frame(df: Any, device: str, npartitions: int) -> Any:
    """A frame already in memory (pandas or cuDF), cut into partitions for the cluster."""
    if is_lazy_frame(df):
        return df
    frames = lazy_frames(device)
    if type(df).__module__.startswith("cudf") and frames.__name__ == "dask_cudf":
        return frames.from_cudf(df, npartitions=npartitions)
    import dask.dataframe as dd

    if type(df).__module__.startswith("cudf"):
        df = df.to_pandas()
    import dask

    # Object columns stay object, as one process reads them: Dask's own conversion to text would turn an id
    # column mixing numbers and text into text before `id_casts` could see it and say so.
    with dask.config.set({"dataframe.convert-string": False}):
        return dd.from_pandas(df, npartitions=npartitions, sort=False)


def partition_count(rows: int, threads: int, given: int | None) -> int:
    """User partitions after the shuffle: as given (at most config.MAX_PARTITIONS_PER_THREAD per thread of
    the cluster, checked here for a running cluster whose threads only now are known), else enough for
    ROWS_PER_PARTITION and two per thread."""
    if given:
        from gpuclust.config import check_partitions

        check_partitions(int(given), threads)
        return int(given)
    return max(2 * max(threads, 1), math.ceil(rows / ROWS_PER_PARTITION))
