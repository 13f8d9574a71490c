"""Frame and array handoffs between cuDF/pandas and CuPy/NumPy, decided in one place.

"Return what you were given": the library converts input frames to the backend's frame library on
the way in and converts results back to the caller's kind on the way out, here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.backend import Backend, pandas_nbytes, to_host, transfers
from gpuclust.errors import UsageError


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


def factorize(column: Any) -> tuple[Any, Any]:
    """(codes, distinct values): codes index the sorted distinct values of a column without nulls, where
    the frame keeps its data (CuPy for cuDF, NumPy for pandas); the values are a Series of its library."""
    codes, uniques = column.factorize(sort=True)
    if frame_kind(column) == "cudf":
        import cudf

        return codes, cudf.Series(uniques)
    import pandas as pd

    return np.asarray(codes), pd.Series(uniques)


def local_array(array: Any, like: Any):
    """`array` (NumPy or CuPy) where the frame or series `like` keeps its data, to index it: small index
    arrays only (a host copy of a device array is counted)."""
    if frame_kind(like) == "cudf":
        import cupy

        return cupy.asarray(array)
    return to_host(array)
