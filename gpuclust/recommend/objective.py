"""`--k auto --objective recommend`: choose k by how well the clusters recommend, not how they look.

The data being fitted lose each eligible user's last item (leave-last-out, as `gpuclust evaluate`
holds out, with the same tie rules); the whole pipeline (features, fuse, reduce) is fitted on the rest,
each k is clustered, and cluster popularity is scored on the held-out items: HR@10 with its standard
error. The rule: the highest validation HR@10 wins; k values within one standard error of it count as
tied (on a few thousand users a difference of 0.01 is noise), and the smallest tied k wins, since a
smaller k is easier to act on and explain. The curve is kept in the manifest and the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpuclust.backend import Backend
from gpuclust.cluster.sweep import KSweep
from gpuclust.errors import UsageError
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.protocols import fit_clusterer
from gpuclust.recommend.scoring import metrics_with_errors, popularity, rank_targets, seen_matrix
from gpuclust.recommend.split import split_table

TOP_K = 10
RULE = ("highest validation HR@10 of cluster popularity (each user's last item held out, the pipeline fitted on "
        "the rest); k values within one standard error of the best count as tied, and the smallest tied k wins")


def recommend_sweep(data: PreparedData, backend: Backend, k_values: Sequence[int],
                    featurize: Callable[[PreparedData], tuple[Any, Callable[[PreparedData], Any]]],
                    make_clusterer: Callable[[int], Any], seed: int = 0) -> KSweep:
    """Score each k by validation HR@10 and choose one by RULE.

    featurize(train) fits fresh featurisers on the training part and returns (x, measure), where
    measure(other) places other prepared users in the same space (for clusterers that take it)."""
    ks = sorted({int(k) for k in k_values})
    if not ks:
        raise UsageError("the k range is empty: give --k auto, 8, 4-16 or 4:16:2")
    xp = backend.xp
    train, users, targets = split_table(data, seed)
    started = time.perf_counter()
    x, measure = featurize(train)
    feature_seconds = time.perf_counter() - started
    users, targets = backend.asarray(users).astype(xp.int64), backend.asarray(targets).astype(xp.int64)
    seen = seen_matrix(train.table, users, data.n_users, data.n_items, backend)
    curve = []
    for k in ks:
        t0 = time.perf_counter()
        model = fit_clusterer(make_clusterer(k), x, backend, train, measure)
        labels = backend.asarray(model.labels_).astype(xp.int64)
        pop = popularity(train.table, labels, data.n_items, backend)
        own = labels[users]
        rows = xp.where(own >= 0, own, pop.k)
        ranks = rank_targets(pop, rows, targets, seen, 1.0, TOP_K, backend)
        scores = metrics_with_errors(ranks, (TOP_K,))
        curve.append({"k": k, "validation_hr10": scores[f"HR@{TOP_K}"], "validation_hr10_se": scores[f"HR@{TOP_K}_se"],
                      "validation_ndcg10": scores[f"NDCG@{TOP_K}"], "inertia": float(getattr(model, "inertia_", np.nan)),
                      "seconds": round(time.perf_counter() - t0, 4)})
    return KSweep(curve, choose_k(curve), RULE, 0, {"objective": "recommend", "validation_users": int(len(targets)),
                                                     "feature_seconds": round(feature_seconds, 4)})


def choose_k(curve: Sequence[dict[str, Any]]) -> int:
    """RULE applied to rows with k, validation_hr10 and validation_hr10_se."""
    best = max(curve, key=lambda row: (row["validation_hr10"], -row["k"]))
    tied = [row for row in curve if row["validation_hr10"] >= best["validation_hr10"] - best["validation_hr10_se"]]
    return int(min(row["k"] for row in tied))
