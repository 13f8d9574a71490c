"""The users nearest each cluster's centre: concrete people a team can look at to see what a cluster means.

Distances are computed where the features live (CuPy or NumPy), in row chunks so memory stays
O(chunk x d); only the k x n chosen row indices cross to the host.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.backend import to_host
from gpuclust.errors import UsageError

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable


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


def exemplar_histories(data: Any, profiles: list[dict], pseudonymised: bool, users: int = 3, items: int = 8,
                       skip: frozenset[int] | set[int] = frozenset()) -> dict[int, list[tuple[str, list[str]]]]:
    """{cluster: [(label, recent items), ...]}: what the first `users` exemplars of each cluster (`profiles`
    as the explainer made them, exemplars by id) touched last, newest first, distinct, by item text.

    A user is labelled by position ("user 1"), or by their id where ids are pseudonymised (the id is then
    the pseudonym): never by a raw id. Clusters in `skip` (withheld for privacy) get none. Only the few
    chosen users' offsets and last events cross to the host."""
    from gpuclust import schema
    from gpuclust.frames import host_frame

    wanted = {int(p["cluster"]): list(p.get("exemplars") or [])[:users] for p in profiles
              if int(p["cluster"]) >= 0 and int(p["cluster"]) not in skip}
    ids = [u for chosen in wanted.values() for u in chosen]
    if not ids:
        return {}
    found = host_frame(data.users[data.users[schema.USER].isin(ids)])
    index = dict(zip(found[schema.USER].tolist(), found[schema.USER_IDX].tolist(), strict=True))
    text = data.text_columns[0] if data.text_columns and data.text_columns[0] in data.items.columns else schema.ITEM
    catalogue = host_frame(data.items[[schema.ITEM_IDX, text]]).sort_values(schema.ITEM_IDX)[text].astype(str).tolist()
    table: EventTable = data.table
    rows = [index[u] for u in ids if u in index]
    recent = _recent_items(table, rows, 10 * items)
    out: dict[int, list[tuple[str, list[str]]]] = {}
    for c, chosen in wanted.items():
        for j, user in enumerate(chosen):
            if user not in index:
                continue
            seen = list(dict.fromkeys(catalogue[i] for i in recent[index[user]][::-1].tolist()))[:items]
            out.setdefault(c, []).append((str(user) if pseudonymised else f"user {j + 1}", seen))
    return out


def _recent_items(table: EventTable, rows: list[int], last: int) -> dict[int, np.ndarray]:
    """{user_idx: item codes of their last `last` events, oldest first} for the users `rows`: two
    device-to-host copies in all (their offsets, then every chosen event at once), not one per user."""
    if not rows:
        return {}
    xp = table.xp
    at = xp.asarray(rows, dtype=xp.int64)
    bounds = to_host(xp.stack([table.offsets[at], table.offsets[at + 1]]))
    stops = bounds[1]
    starts = np.maximum(bounds[0], stops - last)
    lengths = stops - starts
    ends = np.cumsum(lengths)
    picked = np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
    codes = to_host(table.item[xp.asarray(picked)])
    return dict(zip(rows, np.split(codes, ends[:-1]), strict=True))
