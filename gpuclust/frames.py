"""Frame and array handoffs between cuDF/pandas and CuPy/NumPy, decided in one place.

"Return what you were given": the library converts input frames to the backend's frame library on
the way in and converts results back to the caller's kind on the way out, here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.backend import Backend, pandas_nbytes, to_host, transfers
from gpuclust.errors import UsageError, listed


def frame_kind(df: Any) -> str:
    module = type(df).__module__
    if module.startswith("cudf"):
        return "cudf"
    if module.startswith("pandas"):
        return "pandas"
    raise UsageError(f"expected a cuDF or pandas DataFrame, got {type(df).__name__}")


def host_frame(df: Any):
    """A pandas copy of a frame; a cuDF source counts as a device-to-host transfer."""
    if frame_kind(df) == "pandas":
        return df
    out = df.to_pandas()
    transfers.add(pandas_nbytes(out))
    return out


def to_backend_frame(df: Any, backend: Backend):
    """Bring a caller's frame onto the backend's frame library."""
    kind = frame_kind(df)
    if backend.frame_library == kind:
        return df
    if backend.frame_library == "cudf":
        return backend.frame.from_pandas(df)
    return host_frame(df)


def like_input(df: Any, kind: str):
    """Convert a result frame back to the kind the caller passed in."""
    if frame_kind(df) == kind:
        return df
    if kind == "pandas":
        return host_frame(df)
    import cudf

    return cudf.from_pandas(df)


def local_values(series: Any):
    """A column's values where the frame keeps them: CuPy for cuDF, NumPy for pandas."""
    return series.values if frame_kind(series) == "cudf" else series.to_numpy()


def local_xp(series: Any):
    """The array library matching where a frame's data lives."""
    if frame_kind(series) == "cudf":
        import cupy

        return cupy
    return np


def column_array(series: Any, backend: Backend, dtype: Any = None):
    """A frame column as a backend array, staying on the device where the frame is cuDF."""
    if frame_kind(series) == "cudf":
        arr = series.values
        return arr.astype(dtype, copy=False) if dtype is not None else arr
    arr = series.to_numpy(dtype=dtype) if dtype is not None else series.to_numpy()
    return backend.xp.asarray(arr) if backend.on_gpu else arr


def frame_array(df: Any, backend: Backend, dtype: Any = np.float32):
    """A frame's columns as one (rows, columns) backend array."""
    if frame_kind(df) == "cudf":
        return df.astype(dtype).to_cupy()
    arr = df.to_numpy(dtype=dtype)
    return backend.xp.asarray(arr) if backend.on_gpu else arr


def frame_local(array: Any, backend: Backend):
    """An array where the backend's frames keep their data: the device for cuDF, the host for pandas.

    Per-user arrays that frame code reads again and again (the labels) go through here once: with pandas
    frames on a GPU that is one counted copy, instead of one per reader.
    """
    if backend.frame_library == "cudf":
        return backend.xp.asarray(array)
    return to_host(array)


def array_frame(columns: dict[str, Any], backend: Backend):
    """A frame from arrays, on the backend's frame library; device columns cross once for pandas.

    Every column goes through `to_host` for pandas, on the CPU too (where it passes host data through),
    so that a test on the CPU sees each copy the GPU path would make.
    """
    if backend.frame_library == "pandas":
        columns = {name: to_host(col) for name, col in columns.items()}
    return backend.frame.DataFrame(columns)


def factorize(column: Any, backend: Backend | None = None) -> tuple[Any, Any]:
    """(codes, distinct values): codes index the sorted distinct values of a column without nulls, where
    the frame keeps its data (CuPy for cuDF, NumPy for pandas); the values are a Series of its library.

    With pandas frames on a GPU backend (CUDA without cuDF) an integer column is factorised on the device
    (`sorted_codes`), and its codes stay there: one sort of the ids where pandas hashes and sorts them on
    one host core (40M ids of 1M users: 2.6 s on the 2-core machine). Text stays with pandas."""
    if frame_kind(column) == "cudf":
        import cudf

        codes, uniques = column.factorize(sort=True)
        return codes, cudf.Series(uniques)
    import pandas as pd

    if backend is not None and backend.on_gpu and isinstance(column.dtype, np.dtype) and column.dtype.kind in "iu":
        codes, uniques = sorted_codes(backend.xp.asarray(column.to_numpy()), backend.xp)
        return codes, pd.Series(to_host(uniques))
    codes, uniques = column.factorize(sort=True)
    return np.asarray(codes), pd.Series(uniques)


def sorted_codes(values: Any, xp: Any) -> tuple[Any, Any]:
    """(codes, uniques) of a 1-D array by one sort where it lives: what pandas' `factorize(sort=True)`
    gives, for an array library without a hash table."""
    uniques, codes = xp.unique(values, return_inverse=True)
    return codes.reshape(-1).astype(xp.int64, copy=False), uniques


def local_array(array: Any, like: Any):
    """`array` (NumPy or CuPy) where the frame or series `like` keeps its data, to index it: small index
    arrays only (a host copy of a device array is counted)."""
    if frame_kind(like) == "cudf":
        import cupy

        return cupy.asarray(array)
    return to_host(array)


def _squashed(name: Any) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def check_frame(df: Any, what: str, required: tuple[str, ...], ids: tuple[str, ...] = ()) -> None:
    """A frame handed to the estimator has flat, unique column names, the `required` ones, and id
    columns (`ids`) of plain values: the message names the problem and the fix, where a deeper stage
    would raise a KeyError or, for tuple ids, quietly cluster their text."""
    kind = frame_kind(df) if type(df).__module__.startswith(("pandas", "cudf")) else None
    if kind is None or not hasattr(df, "columns") or getattr(df, "ndim", 2) != 2:
        raise UsageError(f"{what} must be a pandas or cuDF DataFrame, got {type(df).__name__}")
    columns = list(df.columns)
    if getattr(df.columns, "nlevels", 1) > 1:
        raise UsageError(f"{what} has MultiIndex columns {columns[:4]}; flatten them to single names first, e.g. "
                         "df.columns = ['_'.join(map(str, c)) for c in df.columns]")
    twice = sorted({str(c) for c in columns if columns.count(c) > 1})
    if twice:
        raise UsageError(f"{what} has the column(s) {', '.join(map(repr, twice))} more than once; keep one of each "
                         "(df.loc[:, ~df.columns.duplicated()])")
    for name in required:
        if name in columns:
            continue
        alike = [c for c in columns if _squashed(c) == _squashed(name)]
        if alike:
            raise UsageError(f"{what} has no column {name!r}, but {alike[0]!r} looks like it (names are case- and "
                             f"spelling-exact): rename it, df.rename(columns={{{alike[0]!r}: {name!r}}})")
        shown = listed(map(repr, columns), 20) or "(none)"
        raise UsageError(f"{what} has no column {name!r} (columns: {shown}); the columns needed are "
                         f"{', '.join(required)}: rename yours to these")
    for name in ids:
        if name not in columns or kind != "pandas":  # cuDF columns hold plain values only
            continue
        column = df[name]
        if getattr(column.dtype, "kind", "") == "c":
            raise UsageError(f"{what} column {name!r} holds complex numbers; an id must be one integer or string")
        if str(column.dtype) != "object":
            continue
        import pandas as pd

        if pd.api.types.infer_dtype(column, skipna=True) in ("string", "integer", "floating", "empty", "bytes",
                                                             "mixed-integer-float", "boolean"):
            continue  # plain values, without a look at each one
        # Only a pandas column of mixed Python objects gets here; cuDF cannot hold such values at all.
        values = column.to_numpy(dtype=object)
        odd = np.fromiter((isinstance(v, tuple | list | dict | set | frozenset | np.ndarray | complex) for v in values),
                          dtype=bool, count=len(values))
        if bool(odd.any()):
            example = values[int(np.argmax(odd))]
            raise UsageError(f"{what} column {name!r} holds {type(example).__name__} values (e.g. {example!r}); an id "
                             "must be one number or string: join the parts into one string first")
