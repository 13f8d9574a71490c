"""User vectors from item vectors: a sparse users x items weight matrix times the item vectors.

Weight of an event = its event-type weight x time decay, 0.5 ** (age_days / half_life_days), age taken
from `data.reference_time` (the latest event). Repeated (user, item) events add up. The product is
L2-normalised per user, so only the mix of items matters, not how active a user is (activity is the
behaviour block's job). Built with `backend.sparse`: on the GPU a cupyx matrix times a CuPy array (item
vectors arrive from torch through DLPack), so nothing goes to the host; on the CPU SciPy and NumPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpuclust import schema
from gpuclust.backend import Backend
from gpuclust.errors import UsageError
from gpuclust.frames import column_array
from gpuclust.preprocess.prepared import PreparedData

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

NS_PER_DAY = 86_400 * 10**9


def timestamps_ns(frame: Any, backend: Backend, name: str = schema.TIME):
    """Event times as int64 nanoseconds (any datetime64 unit in, ns out)."""
    return column_array(frame[name].astype("datetime64[ns]").astype("int64"), backend, "int64")


def reference_ns(reference_time: Any) -> int:
    import pandas as pd

    return int(pd.Timestamp(reference_time).value)


def decay_weights(ages_ns, half_life_days: float | None, xp):
    """0.5 ** (age / half-life); ages below zero (after the reference time) count as zero."""
    if half_life_days is None:
        return None
    ages_days = xp.maximum(ages_ns, 0).astype(xp.float64) / NS_PER_DAY
    return xp.power(0.5, ages_days / float(half_life_days)).astype(xp.float32)


def check_half_life(half_life_days: float | None) -> None:
    if half_life_days is None:
        return
    if isinstance(half_life_days, bool) or not isinstance(half_life_days, int | float) or not half_life_days > 0:
        raise UsageError(f"half_life_days must be a positive number of days (or None for no decay), got {half_life_days!r}")


def interaction_weights(data: PreparedData, backend: Backend, half_life_days: float | None = None):
    """users x items CSR (float32): summed event weight x time decay."""
    check_half_life(half_life_days)
    xp = backend.xp
    t: EventTable = data.table
    users, items, weight = backend.asarray(t.user), backend.asarray(t.item), backend.asarray(t.weight)
    if half_life_days is not None:
        stamps = backend.asarray(t.time)
        ref = reference_ns(data.reference_time) if data.reference_time is not None else int(stamps.max())
        weight = weight * decay_weights(ref - stamps, half_life_days, xp)
    matrix = backend.sparse.coo_matrix(
        (weight.astype(xp.float32), (users, items)), shape=(int(data.n_users), int(data.n_items))
    )
    return matrix.tocsr()


def l2_normalise(vectors, xp, eps: float = 1e-12):
    """Rows scaled to unit length; all-zero rows stay zero."""
    norms = xp.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / xp.maximum(norms, eps)).astype(xp.float32, copy=False)


def pool_users(weights, item_vectors, backend: Backend):
    """(users x items sparse) @ (items x d) -> L2-normalised float32 users x d, on the backend."""
    xp = backend.xp
    if weights.shape[1] != item_vectors.shape[0]:
        raise ValueError(f"weights have {weights.shape[1]} items but there are {item_vectors.shape[0]} item vectors")
    users = weights @ xp.ascontiguousarray(item_vectors, dtype=xp.float32)
    return l2_normalise(xp.asarray(users), xp)
