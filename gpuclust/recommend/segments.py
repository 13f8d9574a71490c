"""What a saved model needs to recommend: item popularity per cluster, global popularity, a blend weight.

    score(item | user in cluster c) = w * share of the item in c + (1 - w) * global share

the recommender `gpuclust evaluate` measures (recommend.evaluation). The table is learned at fit time
from the fitted users' weighted events. The blend weight is either given (`--blend-weight`, e.g. the
one `gpuclust evaluate` chose) or tuned at fit time: a seeded sample of users with at least two
distinct items loses its last item (leave-last-out, the evaluation's rules), the popularity table
loses those events, and the weight of the grid 0.0..1.0 with the best HR@10 over the sample wins
(ties: higher NDCG, then the smaller weight). That tuning reuses the fitted clusters instead of
refitting without the held-out items, so it is cheap and slightly optimistic about the clusters;
`gpuclust evaluate` is the unbiased measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.backend import Backend, to_host
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.recommend.popularity import GRID, shares, weighted_counts
from gpuclust.recommend.scoring import Popularity, item_order, metrics, rank_targets, seen_rows
from gpuclust.recommend.split import held_out, training_rows

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

TUNE_TOP_K = 10
DEFAULT_BLEND = 0.5  # half cluster, half global popularity: where no user can be held out to tune it


@dataclass
class SegmentPopularity:
    """`table`: (k + 1) x items item shares (host float32), row k the global share; `blend_weight` w."""

    table: np.ndarray
    blend_weight: float
    tuning: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.table.shape[0]) - 1

    def scores(self, cluster: int) -> np.ndarray:
        """Blended scores of every item for a user of `cluster` (out-of-range clusters: global only)."""
        w = np.float32(self.blend_weight)
        own = self.table[cluster] if 0 <= cluster < self.k else self.table[self.k]
        return w * own + (np.float32(1.0) - w) * self.table[self.k]

    def ranked(self, cluster: int) -> tuple[np.ndarray, np.ndarray]:
        """Every item a user of `cluster` can be recommended (some share, in the cluster or overall), best
        first, with its score: equal scores by global share, then by index (the order of `recommend`)."""
        scores, glob = self.scores(cluster), self.table[self.k]
        order = item_order(scores[None, :], glob, np)[0]
        order = order[(scores[order] > 0) | (glob[order] > 0)]
        return order, scores[order]

    def withhold(self, clusters: set[int]) -> None:
        """Rows of clusters too small to describe (privacy) recommend by global popularity only."""
        for c in clusters:
            if 0 <= c < self.k:
                self.table[c] = self.table[self.k]

    def to_meta(self) -> dict[str, Any]:
        return {"blend_weight": float(self.blend_weight), "tuning": self.tuning}


def fit_segments(data: PreparedData, labels: Any, k: int, backend: Backend, blend_weight: float | None,
                 tune_users: int, seed: int) -> SegmentPopularity:
    """Popularity per cluster of the fitted users (`labels` per user_idx, xp, -1 = noise) and the blend weight."""
    counts = segment_counts(data, labels, k, backend)
    return segments_from(counts, data, labels, k, backend, blend_weight, tune_users, seed)


def segment_counts(data: PreparedData, labels: Any, k: int, backend: Backend) -> Any:
    """(k + 1) x items summed event weights of `data`'s users (xp float64): partitions' counts add up."""
    xp = backend.xp
    t: EventTable = data.table
    # The table's int32 codes index and its float32 weights are summed in float64 by bincount as they are:
    # no 64-bit copies of the whole log (1.1 s of 2.8 s at 40M events).
    users, items, weights = backend.asarray(t.user), backend.asarray(t.item), backend.asarray(t.weight)
    return weighted_counts(users, items, weights, xp.asarray(labels).astype(xp.int64), k, data.n_items, xp)


def segments_from(counts: Any, sample: PreparedData, labels: Any, k: int, backend: Backend,
                  blend_weight: float | None, tune_users: int, seed: int) -> SegmentPopularity:
    """The table from all users' `counts`; a weight not given is tuned on users of `sample` (all users
    in one process, a partition of them on a cluster) with their `labels`."""
    table = to_host(shares(counts, backend.xp))
    if blend_weight is not None:
        return SegmentPopularity(table, float(blend_weight), {"how": "given"})
    clusters = backend.xp.asarray(labels).astype(backend.xp.int64)
    return SegmentPopularity(table, *_tune(sample, clusters, counts, k, backend, tune_users, seed))


def _tune(data: PreparedData, clusters: Any, counts: Any, k: int, backend: Backend, tune_users: int,
          seed: int) -> tuple[float, dict[str, Any]]:
    xp = backend.xp
    rng = np.random.default_rng(seed)
    n_sample = min(tune_users, data.n_users)
    sample = np.sort(rng.choice(data.n_users, size=n_sample, replace=False)).astype(np.int32)
    t: EventTable = data.table
    in_sample = xp.zeros(data.n_users, dtype=bool)
    in_sample[xp.asarray(sample)] = True
    rows = xp.nonzero(in_sample[backend.asarray(t.user)])[0]
    user, item, time, weight = (backend.asarray(a)[rows] for a in (t.user, t.item, t.time, t.weight))
    if len(user) == 0:
        return DEFAULT_BLEND, {"how": "default: no user to tune on", "users": 0}
    test_users, targets = held_out(user, item, time, weight, data.n_items, seed, xp, presorted=True)  # table rows, in order
    if len(test_users) == 0:
        return DEFAULT_BLEND, {"how": "default: no sampled user has two distinct items", "users": 0}
    train = training_rows(user, item, test_users, targets, data.n_items, xp)
    # The held-out events leave the popularity the sample is scored against.
    held = ~train
    table = shares(counts - weighted_counts(user[held].astype(xp.int64), item[held].astype(xp.int64),
                                            weight[held].astype(xp.float64), clusters, k, data.n_items, xp), xp)
    own = clusters[test_users]
    rows = xp.where(own >= 0, own, k)
    seen = seen_rows(user[train], item[train], test_users, data.n_users, data.n_items, backend)
    pop = Popularity(table, k)
    curve = [{"w": float(w), **metrics(rank_targets(pop, rows, targets, seen, float(w), TUNE_TOP_K, backend),
                                       (TUNE_TOP_K,))} for w in GRID]
    best = max(curve, key=lambda r: (r[f"HR@{TUNE_TOP_K}"], r[f"NDCG@{TUNE_TOP_K}"], -r["w"]))
    return best["w"], {"how": f"tuned at fit time: leave-last-out HR@{TUNE_TOP_K} on a sample of the fitted users "
                              "with the fitted clusters (optimistic; `gpuclust evaluate` refits)",
                       "users": int(len(targets)), "seed": seed, "curve": curve}
