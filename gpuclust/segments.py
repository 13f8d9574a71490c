"""Segment primitives: the few array operations every stage on the event table is made of.

The event table is sorted once by (user, time), so a user's events are one contiguous segment and
`offsets[u]:offsets[u + 1]` holds them. Group-bys become bincounts with weights, first/last gathers at
segment ends, and run starts found by comparing neighbours. Each function takes the array namespace
`xp` (NumPy or CuPy) and works the same on both: written once, run on the device the data is on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_PACK_BITS = 62  # a packed (segment, key) sort key stays below 2**62
_STEPS = (1_000_000_000, 1_000_000, 1_000, 1)


def offsets_of(sorted_ids: Any, n: int, xp: Any) -> Any:
    """CSR offsets (n + 1, int64) of ids sorted ascending: segment s is rows offsets[s]:offsets[s + 1]."""
    return xp.searchsorted(sorted_ids, xp.arange(n + 1, dtype=sorted_ids.dtype), side="left").astype(xp.int64)


def ids_of(offsets: Any, xp: Any) -> Any:
    """The segment id of every row (int32): the inverse of `offsets_of`. A searchsorted over the offsets,
    not a repeat by segment lengths: CuPy before 14 refuses a device array as `repeats` (and the
    gpu-cu12 extra allows CuPy 13.6)."""
    rows = xp.arange(int(offsets[-1]) if len(offsets) else 0, dtype=offsets.dtype)
    return (xp.searchsorted(offsets, rows, side="right") - 1).astype(xp.int32)


def segment_sum(values: Any, ids: Any, n: int, xp: Any) -> Any:
    """Per-segment sums (float64) of `values` (or counts where `values` is None); empty segments give 0."""
    if values is None:
        return xp.bincount(ids, minlength=n).astype(xp.float64)
    return xp.bincount(ids, weights=values.astype(xp.float64), minlength=n)


def group_sums(x: Any, ids: Any, n: int, xp: Any, squares: bool = False) -> tuple[Any, ...]:
    """Per group 0..n-1 of the rows of matrix `x`: column sums (float64, n x columns) and row counts
    (float64), and with `squares` the sums of squares between them: what cluster centres, k-means steps
    and per-cluster spreads are made of, anywhere. A bincount per column: the columns are few (tens to
    hundreds), and it never makes an n x groups one-hot. On a device, `_group_sums_by_blocks`: the same
    sums with a bincount per block of columns, since each CuPy bincount waits on the device twice."""
    if xp is not np:
        return _group_sums_by_blocks(x, ids, n, xp, squares)
    sums = xp.zeros((n, x.shape[1]), dtype=xp.float64)
    square_sums = xp.zeros_like(sums) if squares else None
    for j in range(x.shape[1]):
        column = x[:, j].astype(xp.float64)
        sums[:, j] = xp.bincount(ids, weights=column, minlength=n)[:n]
        if squares:
            square_sums[:, j] = xp.bincount(ids, weights=column * column, minlength=n)[:n]
    counts = xp.bincount(ids, minlength=n)[:n].astype(xp.float64)
    return (sums, square_sums, counts) if squares else (sums, counts)


GROUP_SUM_CELLS = 1 << 24  # rows x columns per bincount of `_group_sums_by_blocks`: 128 MiB of int64 keys


def _group_sums_by_blocks(x: Any, ids: Any, n: int, xp: Any, squares: bool = False,
                          cells: int = GROUP_SUM_CELLS) -> tuple[Any, ...]:
    """`group_sums` with one bincount per block of columns, keyed by (group, column): cupy.bincount reads
    its input's minimum and maximum back to the host (cupy/_statistics/histogram.py: "synchronize!"), so
    a bincount per column waited on the device 2 x (columns + 1) times, 4 x columns + 2 with squares.
    Each bin sums its rows in row order, as the bincount of one column does; groups at or past `n` fall
    past the kept bins, as they do there."""
    rows, d = x.shape
    sums = xp.zeros((n, d), dtype=xp.float64)
    square_sums = xp.zeros_like(sums) if squares else None
    step = max(1, cells // max(rows, 1))
    group = ids.astype(xp.int64)
    for start in range(0, d, step):
        stop = min(start + step, d)
        width = stop - start
        key = (group[:, None] * width + xp.arange(width, dtype=xp.int64)[None, :]).ravel()
        block = x[:, start:stop].astype(xp.float64)
        sums[:, start:stop] = xp.bincount(key, weights=xp.ravel(block), minlength=n * width)[:n * width].reshape(n, width)
        if squares:
            square_sums[:, start:stop] = xp.bincount(key, weights=xp.ravel(block * block),
                                                     minlength=n * width)[:n * width].reshape(n, width)
    counts = xp.bincount(ids, minlength=n)[:n].astype(xp.float64)
    return (sums, square_sums, counts) if squares else (sums, counts)


def group_moments(x: Any, ids: Any, n: int, xp: Any) -> tuple[Any, Any, Any]:
    """Per group: sums, sums of squares and row counts (`group_sums` with squares)."""
    return group_sums(x, ids, n, xp, squares=True)


def segment_first(values: Any, offsets: Any, fill: Any, xp: Any) -> Any:
    """The first value of each segment (`fill` where a segment is empty)."""
    return _at(values, offsets[:-1], offsets[:-1] < offsets[1:], fill, xp)


def segment_last(values: Any, offsets: Any, fill: Any, xp: Any) -> Any:
    """The last value of each segment (`fill` where a segment is empty)."""
    return _at(values, offsets[1:] - 1, offsets[:-1] < offsets[1:], fill, xp)


def _at(values: Any, rows: Any, present: Any, fill: Any, xp: Any) -> Any:
    if len(values) == 0:
        return xp.full(len(rows), fill, dtype=values.dtype)
    picked = values[xp.clip(rows, 0, len(values) - 1)]
    return xp.where(present, picked, xp.asarray(fill, dtype=values.dtype))


def run_starts(*columns: Any, xp: Any) -> Any:
    """True where a row differs from the one before it in any column (row 0 always starts a run)."""
    n = len(columns[0])
    starts = xp.zeros(n, dtype=bool)
    if n == 0:
        return starts
    starts[0] = True
    for column in columns:
        starts[1:] |= column[1:] != column[:-1]
    return starts


def distinct_per_segment(ids: Any, keys: Any, n: int, n_keys: int, xp: Any) -> Any:
    """How many distinct `keys` (0..n_keys-1) each segment holds, whatever the order within segments."""
    if len(ids) == 0:
        return xp.zeros(n, dtype=xp.int64)
    pairs = xp.sort(ids.astype(xp.int64) * int(n_keys) + keys.astype(xp.int64))  # sort, not a hash unique:
    distinct = pairs[run_starts(pairs, xp=xp)]  # NumPy 2's hash-based unique is several times slower here
    return xp.bincount(distinct // int(n_keys), minlength=n)


def stable_order(major: Any, minor: Any, xp: Any) -> Any:
    """The permutation that sorts rows by (major, minor), ties kept in input order.

    `major` is non-negative. Where (major, minor - min) packs into one int64 (after dividing `minor` by a
    step all its values share: whole seconds, milliseconds or microseconds in nanoseconds) it is one
    stable argsort of the packed key, several times faster than a lexsort on the CPU; otherwise a lexsort."""
    if len(major) == 0:
        return xp.zeros(0, dtype=xp.int64)
    minor = minor.astype(xp.int64)
    low = minor.min()
    shifted = minor - low
    for step in _STEPS:  # the coarsest clock every value is on: whole seconds, ms or us in nanoseconds
        if step == 1 or not bool((shifted % step).any()):
            break
    if step > 1:
        shifted = shifted // step
    span = int(shifted.max()) + 1
    top = int(major.max()) + 1
    if span > 0 and top > 0 and np.log2(float(top)) + np.log2(float(span)) < _PACK_BITS:
        return xp.argsort(major.astype(xp.int64) * span + shifted, kind="stable")
    return xp.lexsort(xp.stack([shifted, major.astype(xp.int64)]))


def duplicate_neighbours(segment_start: Any, columns: tuple[Any, ...], xp: Any) -> Any:
    """Rows equal in every column to an earlier row of the same tie group; `segment_start` marks where
    tie groups (rows already equal in the sort keys) begin. Only rows of groups of two or more are
    sorted again, so the cost follows the ties, not the table."""
    n = len(segment_start)
    dup = xp.zeros(n, dtype=bool)
    if n < 2:
        return dup
    group = xp.cumsum(segment_start) - 1
    sizes = xp.bincount(group)
    tied = xp.nonzero(sizes[group] > 1)[0]
    if len(tied) == 0:
        return dup
    keys = [c[tied].astype(xp.int64) for c in reversed(columns)] + [group[tied].astype(xp.int64)]
    order = xp.lexsort(xp.stack(keys))
    rows = tied[order]
    same = ~run_starts(group[rows], *(c[rows] for c in columns), xp=xp)
    dup[rows[same]] = True
    return dup
