"""Scoring cluster popularity as a recommender: the tables, the seen items and the ranks of held-out
targets. Used by the estimator's recommend objective and by `evaluate` / `compare` above it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuclust.backend import Backend, row_top_k, to_host
from gpuclust.preprocess.table import EventTable
from gpuclust.recommend.popularity import shares, weighted_counts

BATCH_CELLS = 1 << 25  # batch x items scores per step: 128 MiB of float32


@dataclass
class Popularity:
    """Item shares: `table` rows 0..k-1 per cluster, row k the global share (for noise and fallbacks)."""

    table: Any  # (k + 1) x items, float32
    k: int

    @property
    def global_share(self):
        return self.table[self.k]


# --- the pieces -----------------------------------------------------------------------------

def training_columns(train: EventTable, backend: Backend) -> tuple[Any, Any, Any]:
    """(user_idx int64, item_idx int64, weight float64) of the training events' table, on the backend."""
    xp = backend.xp
    return (backend.asarray(train.user).astype(xp.int64), backend.asarray(train.item).astype(xp.int64),
            backend.asarray(train.weight).astype(xp.float64))


def popularity(train: EventTable, clusters: Any, n_items: int, backend: Backend) -> Popularity:
    """Weighted item shares per cluster and overall, as one dense (k + 1) x items table."""
    xp = backend.xp
    users, item, weight = training_columns(train, backend)
    k = max(int(to_host(clusters.max())) + 1 if len(clusters) else 0, 0)
    return Popularity(shares(weighted_counts(users, item, weight, clusters, k, n_items, xp), xp), k)


def seen_matrix(train: EventTable, users: Any, n_users: int, n_items: int, backend: Backend):
    """CSR (evaluated users x items) of what each evaluated user has in training; row r = users[r]."""
    train_user, train_item, _ = training_columns(train, backend)
    return seen_rows(train_user, train_item, users, n_users, n_items, backend)


def seen_rows(train_users: Any, train_items: Any, users: Any, n_users: int, n_items: int, backend: Backend):
    """`seen_matrix` from the training events' user and item arrays (xp) instead of a table or frame."""
    xp = backend.xp
    position = xp.full(n_users, -1, dtype=xp.int64)
    position[users] = xp.arange(len(users), dtype=xp.int64)
    row = position[train_users.astype(xp.int64)]
    col = train_items.astype(xp.int64)
    keep = row >= 0
    row, col = row[keep], col[keep]
    matrix = backend.sparse.coo_matrix((xp.ones(len(row), dtype=xp.float32), (row, col)), shape=(len(users), n_items))
    return matrix.tocsr()


def rank_targets(pop: Popularity, rows: Any, targets: Any, seen: Any, w: float, top_k: int,
                 backend: Backend) -> np.ndarray:
    """0-based rank of each user's target in its top `top_k` list, or -1 where it is not in the list.

    Score = w * share in the user's cluster (row `rows`) + (1 - w) * global share, seen items left out;
    equal scores go to the higher global share, then the lower index (`top_k_sorted`'s order), so a
    cluster with fewer than `top_k` items of its own fills its list with the most popular items.

    Every user of a cluster ranks the items in the same order, so the rank of a target is its place in
    its cluster's order less the seen items placed before it: one sort per cluster row and a pass over
    the seen pairs, never a users x items matrix (the same answer as listing each user's top K and
    looking for the target: tested against it)."""
    xp = backend.xp
    n_items = pop.table.shape[1]
    top_k = min(top_k, n_items)
    targets, rows = xp.asarray(targets).astype(xp.int64), xp.asarray(rows).astype(xp.int64)
    if len(targets) == 0:
        return np.empty(0, dtype=np.int64)
    place = _places(xp.float32(w) * pop.table + xp.float32(1.0 - w) * pop.global_share[None, :],
                    pop.global_share, xp)
    target_place = place[rows, targets]
    pairs = seen.tocoo()
    user, item = xp.asarray(pairs.row).astype(xp.int64), xp.asarray(pairs.col).astype(xp.int64)
    before = place[rows[user], item] < target_place[user]
    ahead = xp.bincount(user[before], minlength=len(targets))
    target_seen = xp.zeros(len(targets), dtype=bool)
    target_seen[user[item == targets[user]]] = True
    rank = target_place - ahead
    return to_host(xp.where(~target_seen & (rank < top_k), rank, -1).astype(xp.int64))


def item_order(scores: Any, tie: Any, xp) -> Any:
    """Each row's items best first: by score, then tie (e.g. the global share), higher first, then the
    lower index; stable sorts from the last key to the first. The order every popularity list follows."""
    by_tie = _stable_argsort(-tie, xp)
    return xp.take_along_axis(xp.broadcast_to(by_tie, scores.shape), _stable_argsort(-scores[:, by_tie], xp), axis=1)


def _places(scores: Any, tie: Any, xp) -> Any:
    """Each item's 0-based place in each row's `item_order`, as int32."""
    order = item_order(scores, tie, xp)
    place = xp.empty(scores.shape, dtype=xp.int32)
    place[xp.arange(scores.shape[0])[:, None], order] = xp.arange(scores.shape[1], dtype=xp.int32)[None, :]
    return place


def top_k_sorted(scores: Any, top_k: int, xp, tie: Any = None) -> tuple[Any, Any]:
    """(item indices, scores) of each row's `top_k` best, best first, where the scores are (on the device):
    `row_top_k` then a sort of k columns, never a sort of the whole row. With `tie` (one value per item,
    e.g. the global share) equal scores are ordered by it, higher first, then by the lower index."""
    n_items = scores.shape[1]
    top_k = min(top_k, n_items)
    if tie is not None:
        return _top_k_with_ties(scores, top_k, xp, tie)
    if top_k < n_items:
        top = row_top_k(scores, top_k, xp)
    else:
        top = xp.broadcast_to(xp.arange(n_items), scores.shape)
    top_scores = xp.take_along_axis(scores, top, axis=1)
    order = xp.argsort(-top_scores, axis=1)
    return xp.take_along_axis(top, order, axis=1), xp.take_along_axis(top_scores, order, axis=1)


def _top_k_with_ties(scores: Any, top_k: int, xp, tie: Any) -> tuple[Any, Any]:
    """`top_k_sorted` in the order (score, tie, -index): the k-th best score is the threshold; the items
    above it are in, and the free places go to the items at it that come first by (tie, -index). Two
    top-k selections and stable sorts of 2k candidates per row, still never a sort of the whole row."""
    n, n_items = scores.shape
    by_tie = _stable_argsort(-tie, xp)  # the order of equal scores: higher tie, then lower index
    place = xp.empty(n_items, dtype=xp.int64)
    place[by_tie] = xp.arange(n_items, dtype=xp.int64)
    if top_k < n_items:
        first = row_top_k(scores, top_k, xp)
        threshold = xp.take_along_axis(scores, first, axis=1).min(axis=1, keepdims=True)
        at = scores == threshold
        key = xp.where(at, place[None, :], n_items)  # distinct among the tied: the selection is exact
        second = row_top_k(-key, top_k, xp)
        candidates = xp.concatenate([first, second], axis=1)
        valid = xp.concatenate([xp.take_along_axis(scores > threshold, first, axis=1),
                                xp.take_along_axis(at, second, axis=1)], axis=1)
    else:
        candidates = xp.broadcast_to(xp.arange(n_items), (n, n_items))
        valid = xp.ones((n, n_items), dtype=bool)
    # Stable sorts from the last key to the first: the tie order, the score, valid candidates first.
    order = _stable_argsort(place[candidates], xp)
    for key in (-xp.take_along_axis(scores, candidates, axis=1), (~valid).astype(xp.int8)):
        order = xp.take_along_axis(order, _stable_argsort(xp.take_along_axis(key, order, axis=1), xp), axis=1)
    top = xp.take_along_axis(candidates, order[:, :top_k], axis=1)
    return top, xp.take_along_axis(scores, top, axis=1)


def _stable_argsort(keys: Any, xp) -> Any:
    """argsort along the last axis, stable: NumPy is asked for it; CuPy's sort is always stable (and takes
    no other kind)."""
    return xp.argsort(keys, axis=-1, kind="stable") if xp is np else xp.argsort(keys, axis=-1)


def hit_ranks(top: Any, top_scores: Any, targets: Any, xp) -> Any:
    """0-based position of each row's target in its list, -1 where absent (masked -inf entries never hit)."""
    hit = (top == targets[:, None]) & xp.isfinite(top_scores)
    return xp.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def metrics(ranks: np.ndarray, k_values: Sequence[int]) -> dict[str, float]:
    """HR@K (target in the top K) and NDCG@K (1 / log2(rank + 2) for one relevant item), averaged."""
    out: dict[str, float] = {}
    n = max(len(ranks), 1)
    for k in k_values:
        hit = (ranks >= 0) & (ranks < k)
        gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
        out[f"HR@{k}"] = round(float(hit.sum() / n), 6)
        out[f"NDCG@{k}"] = round(float(gain.sum() / n), 6)
    return out


def metrics_with_errors(ranks: np.ndarray, k_values: Sequence[int]) -> dict[str, float]:
    """`metrics` plus the standard error of each mean (HR: sqrt(p (1 - p) / n); NDCG: sd / sqrt(n))."""
    out = metrics(ranks, k_values)
    n = max(len(ranks), 1)
    for k in k_values:
        hit = (ranks >= 0) & (ranks < k)
        gain = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
        p = hit.mean() if len(ranks) else 0.0
        out[f"HR@{k}_se"] = round(float(np.sqrt(p * (1 - p) / n)), 6)
        out[f"NDCG@{k}_se"] = round(float(gain.std(ddof=1) / np.sqrt(n)) if len(ranks) > 1 else 0.0, 6)
    return out


def captured_lift(hr: float, hr_global: float, hr_personal: float, noise: float = 0.0) -> float | None:
    """The share of the personal model's lift over global popularity that a recommender captures:
    (HR − HR_global) / (HR_personal − HR_global); None where the personal model has no lift to share, or
    none beyond `noise` (`lift_noise`): a share of a gap that sampling alone can make is noise over noise,
    and on a tiny log it read -100% or +300%."""
    gap = hr_personal - hr_global
    return round((hr - hr_global) / gap, 4) if gap > max(noise, 0.0) else None


def lift_noise(global_row: dict[str, Any], personal_row: dict[str, Any], key: str) -> float:
    """Twice the standard error of HR_personal − HR_global (`key` "HR@10"), from the rows' own errors (as
    if independent: the same users make it smaller, so this errs towards saying nothing)."""
    return 2.0 * math.hypot(global_row.get(f"{key}_se", 0.0), personal_row.get(f"{key}_se", 0.0))
