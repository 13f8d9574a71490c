"""Campaigns: per cluster, the items to promote to it. Segments explain who the users are; the personal
model knows what each of them would take next. Summed over a segment, its scores say what that group
as a whole leans to, and the items few of its users already have are the ones worth a campaign:

    score_c(i)  = mean over the users of c of the personal score X_u B (or X_u W)[i]
    lift_c(i)   = score_c(i) / the same mean over every fitted user
    owned_c(i)  = share of c's users who already have item i; candidates have owned_c <= max_owned

Items are ranked by score_c; the lift says how specific the pull is to the segment. Everything is a
k x items matrix: the segments' mean rows of X times the weights, on the backend's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.backend import Backend, to_host
from gpuclust.recommend.personal import PersonalModel

TOP_N = 10
MAX_OWNED = 0.1  # items a tenth of the segment already has are not news to it


def promotions(personal: PersonalModel, x: Any, labels: Any, k: int, backend: Backend,
               top_n: int = TOP_N, max_owned: float = MAX_OWNED) -> list[list[dict[str, Any]]]:
    """Per cluster 0..k-1, up to `top_n` items (item_idx, score, lift, owned_share), best first, from the
    fitted users' `binary_matrix` x (users x items) and their `labels` (per user_idx, -1 = noise)."""
    xp = backend.xp
    labels = xp.asarray(labels).astype(xp.int64)
    n_users = int(labels.shape[0])
    inside = xp.nonzero(labels >= 0)[0]
    member = backend.sparse.coo_matrix((xp.ones(len(inside), dtype=xp.float32), (labels[inside], inside)),
                                       shape=(k, n_users)).tocsr()
    sizes = xp.asarray(member.sum(axis=1)).ravel()
    owned = xp.asarray((member @ x).toarray()) / xp.maximum(sizes, 1)[:, None]  # k x items: share who have it
    everyone = xp.asarray(x.sum(axis=0)).ravel()[None, :] / max(n_users, 1)
    scores = _times_weights(personal, xp.concatenate([owned, everyone]).astype(xp.float32), backend)
    segment, population = scores[:k], scores[k]
    lift = xp.where(population > 0, segment / xp.where(population > 0, population, 1), 0.0)
    ranked = xp.where((owned <= max_owned) & (segment > 0), segment, -xp.inf)
    order = xp.argsort(-ranked, axis=1)[:, :top_n]
    order, ranked, lift, owned, sizes = (to_host(a) for a in (order, ranked, lift, owned, sizes))
    out = []
    for c in range(k):
        keep = [int(i) for i in order[c] if np.isfinite(ranked[c, i])] if sizes[c] > 0 else []
        out.append([{"item_idx": i, "score": round(float(ranked[c, i]), 6), "lift": round(float(lift[c, i]), 3),
                     "owned_share": round(float(owned[c, i]), 4)} for i in keep])
    return out


def _times_weights(personal: PersonalModel, rows: Any, backend: Backend) -> Any:
    """Dense rows (r x items) times the personal weights: dense B, or the kNN CSR from the right."""
    if personal.kind == "ease":
        return rows @ personal.weights
    return (personal.weights.T @ rows.T).T


def with_promotions(profiles: list[dict[str, Any]], promoted: list[list[dict[str, Any]]],
                    item_ids: np.ndarray) -> list[dict[str, Any]]:
    """Profiles with a `promote` list (item_id, score, lift, owned_share) per cluster; clusters whose
    figures were withheld (privacy) get none, as they get no other figure."""
    out = []
    for profile in profiles:
        c = int(profile["cluster"])
        if 0 <= c < len(promoted) and not profile.get("suppressed"):
            profile = {**profile, "promote": [{"item_id": _plain(item_ids[p["item_idx"]]),
                                               **{k: v for k, v in p.items() if k != "item_idx"}}
                                              for p in promoted[c]]}
        out.append(profile)
    return out


def _plain(value: Any) -> Any:
    """A NumPy scalar id as the JSON writer's plain int or str."""
    return value.item() if isinstance(value, np.generic) else value
