"""The users nearest each cluster's centre: concrete people a team can look at to see what a cluster means.

Distances are computed where the features live (CuPy or NumPy), in row chunks so memory stays
O(chunk x d); only the k x n chosen row indices cross to the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from gpuclust.backend import to_host
from gpuclust.errors import UsageError


def nearest_users(features: Any, labels: Any, centres: Any, user_ids: Any, n: int = 5, *,
                  xp: ModuleType, chunk: int = 65_536) -> dict[int, list]:
    """{cluster: [user_id, ...]}: the `n` users of each cluster closest to its centre, nearest first.

    features: users x d (xp), row i = user_idx i; labels: int per user (-1 = noise, skipped);
    centres: k x d (xp); user_ids: host array with the id of each user_idx.
    """
    if n < 1:
        raise UsageError(f"n must be at least 1, got {n}")
    n_users, k = int(features.shape[0]), int(centres.shape[0])
    if len(labels) != n_users or len(user_ids) != n_users:
        raise UsageError(f"features ({n_users} rows), labels ({len(labels)}) and user_ids ({len(user_ids)}) "
                         "must describe the same users")
    labels = xp.asarray(labels)
    centres = xp.asarray(centres, dtype=xp.float32)
    dist = xp.empty(n_users, dtype=xp.float32)
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        own = centres[xp.clip(labels[start:stop], 0, max(k - 1, 0))]
        diff = features[start:stop].astype(xp.float32, copy=False) - own
        dist[start:stop] = (diff * diff).sum(axis=1)

    chosen = []
    for c in range(k):
        members = xp.nonzero(labels == c)[0]
        if len(members) > n:
            members = members[xp.argpartition(dist[members], n - 1)[:n]]
        chosen.append(members[xp.argsort(dist[members])])
    sizes = [len(m) for m in chosen]
    flat = to_host(xp.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    ids = np.asarray(user_ids)
    out: dict[int, list] = {}
    offset = 0
    for c, size in enumerate(sizes):
        out[c] = [_plain(ids[i]) for i in flat[offset:offset + size]]
        offset += size
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
