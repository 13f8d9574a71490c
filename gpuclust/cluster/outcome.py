"""What any fitted clusterer means for the users: labels, centres, distances, noise — derived one way.

Whatever found the clusters (gpuclust's engines, a scikit-learn or cuML estimator), the centres are
its `cluster_centers_` where it has them and each cluster's member mean otherwise; a user's distance
is to its own cluster's centre (noise users: to the nearest centre). New users are placed at the
nearest centre, which is all a saved model needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuclust.backend import Backend, to_host
from gpuclust.errors import InputWarning, ResultWarning, UsageError, listed
from gpuclust.frames import frame_local
from gpuclust.segments import group_sums

NOISE_WARN_SHARE = 0.2  # above this share of users in noise, the result is a warning


@dataclass
class ClusterOutcome:
    labels: Any  # xp int32, -1 = noise
    centres: Any  # xp float32 (k, d)
    distances: Any  # xp float32, to the own centre (noise: to the nearest)
    noise: Any | None  # xp bool mask, None when no user is noise
    inertia: float  # squared distances of clustered users, summed
    _frame_labels: Any = field(default=None, repr=False)

    def frame_labels(self, backend: Backend) -> Any:
        """The labels where the frames keep their data (`frames.frame_local`), made once: profiles,
        c-TF-IDF, truth scores, the map and the assignments all read this one copy."""
        if self._frame_labels is None:
            self._frame_labels = frame_local(self.labels, backend)
        return self._frame_labels

    @property
    def n_clusters(self) -> int:
        return int(self.centres.shape[0])

    @property
    def n_noise(self) -> int:
        return 0 if self.noise is None else int(self.noise.sum())


def outcome_of(model: Any, x: Any, backend: Backend) -> ClusterOutcome:
    """The outcome of a fitted clusterer on the matrix it was fitted on."""
    xp = backend.xp
    labels = backend.asarray(model.labels_).astype(xp.int32)
    labels = xp.where(labels < 0, -1, labels).astype(xp.int32)  # scikit-learn's HDBSCAN also uses -2, -3
    found = int(labels.max()) + 1 if labels.shape[0] else 0
    if found < 1:
        raise UsageError(f"{getattr(model, 'algorithm', type(model).__name__)} found no clusters: every user is "
                         "noise; loosen its density settings (--eps, --min-samples, --min-cluster-size)")
    centres = getattr(model, "cluster_centers_", None)
    if centres is None:
        labels, found = _without_gaps(labels, found, getattr(model, "algorithm", type(model).__name__), xp)
        centres = group_means(x, labels, found, xp)
    else:
        labels, centres = _without_empty(labels, backend.asarray(centres, dtype=xp.float32), xp)
    distances = own_distances(x, labels, centres, xp)
    noise = labels < 0
    noise = noise if bool(noise.any()) else None
    if noise is not None:
        warn_noise(int(noise.sum()), int(labels.shape[0]), getattr(model, "algorithm", type(model).__name__))
    member = distances if noise is None else distances[~noise]
    return ClusterOutcome(labels, centres, distances, noise, float((member.astype(xp.float64) ** 2).sum()))


def warn_noise(n_noise: int, n_users: int, algorithm: str) -> None:
    """Above NOISE_WARN_SHARE of users in noise (in no cluster) the clusters describe a minority: a
    `ResultWarning` says how many and which settings place more users."""
    if n_users and n_noise / n_users > NOISE_WARN_SHARE:
        fix = ("lower --min-cluster-size or --min-samples (HDBSCAN's min_cluster_size, min_samples)"
               if "hdbscan" in algorithm.lower() else
               "raise --eps or lower --min-samples (DBSCAN's eps, min_samples)" if "dbscan" in algorithm.lower()
               else "loosen the clusterer's density settings")
        warnings.warn(f"{n_noise:,} of {n_users:,} users ({n_noise / n_users:.1%}) are noise, in no cluster "
                      f"({algorithm}); the clusters describe the rest only: {fix}, or use --algorithm kmeans, which "
                      "places every user", ResultWarning, stacklevel=3)


def _without_empty(labels: Any, centres: Any, xp) -> tuple[Any, Any]:
    """Labels and centres without the centres no user is nearest to (k-means on users too alike to fill
    k clusters leaves some empty, or duplicates): k is what the users allow, and the user is told."""
    k = int(centres.shape[0])
    used = xp.unique(labels[labels >= 0])
    if int(used.shape[0]) == k:
        return labels, centres
    warnings.warn(f"{k} clusters were asked for, but only {int(used.shape[0])} hold users (the users are too alike "
                  f"to split further); continuing with {int(used.shape[0])}", InputWarning, stacklevel=3)
    return _renumbered(labels, used, k, xp), centres[used]


def _without_gaps(labels: Any, k: int, owner: str, xp) -> tuple[Any, int]:
    """Labels of a clusterer without centres, numbered 0..m-1 where its own skip numbers (0, 2, 5): a
    number no user has would get a centre at the mean of no user, the origin, and new users placed there
    would land in a cluster without members, profile or list. Returns (labels, m)."""
    used = xp.unique(labels[labels >= 0])
    m = int(used.shape[0])
    if m == k:
        return labels, k
    present = np.zeros(k, dtype=bool)
    present[to_host(used)] = True
    warnings.warn(f"{owner}'s labels skip {listed(np.flatnonzero(~present).tolist())} (no user has them): its {m} "
                  f"clusters are renumbered 0..{m - 1}, in the order of its labels", InputWarning, stacklevel=4)
    return _renumbered(labels, used, k, xp), m


def _renumbered(labels: Any, used: Any, k: int, xp) -> Any:
    """Labels mapped to their rank among `used` (sorted label values); noise stays -1."""
    renumber = xp.full(k, -1, dtype=xp.int32)
    renumber[used] = xp.arange(int(used.shape[0]), dtype=xp.int32)
    return xp.where(labels >= 0, renumber[xp.maximum(labels, 0)], -1).astype(xp.int32)


def nearest_centres(x: Any, centres: Any, xp, chunk: int = 65_536) -> tuple[Any, Any]:
    """Nearest centre and its Euclidean distance, by chunked matmuls (memory stays O(chunk * k))."""
    n = x.shape[0]
    labels = xp.empty(n, dtype=xp.int32)
    dist = xp.empty(n, dtype=xp.float32)
    c_sq = (centres.astype(xp.float32) ** 2).sum(axis=1)
    for start in range(0, n, chunk):
        block = x[start:start + chunk].astype(xp.float32, copy=False)
        d2 = (block**2).sum(axis=1, keepdims=True) - 2.0 * block @ centres.T + c_sq[None, :]
        best = xp.argmin(d2, axis=1)
        labels[start:start + chunk] = best
        # Exact distance to the chosen centre: the expanded form above loses precision near zero.
        dist[start:start + chunk] = xp.linalg.norm(block - centres[best], axis=1)
    return labels, dist


def group_means(x: Any, labels: Any, k: int, xp) -> Any:
    """(k, d) float32 mean of the rows of each label 0..k-1 (rows labelled < 0 are ignored).

    `segments.group_sums`: O(n * d) whatever k is, and no (n x k) one-hot.
    """
    keep = labels >= 0
    sums, counts = group_sums(x[keep], labels[keep], k, xp)
    return (sums / xp.maximum(counts, 1.0)[:, None]).astype(xp.float32)


def own_distances(x: Any, labels: Any, centres: Any, xp, chunk: int = 65_536) -> Any:
    """Euclidean distance of each row to the centre of its label; rows labelled < 0 get the nearest centre."""
    n = x.shape[0]
    out = xp.empty(n, dtype=xp.float32)
    for start in range(0, n, chunk):
        block = x[start:start + chunk].astype(xp.float32, copy=False)
        lab = labels[start:start + chunk]
        own = xp.linalg.norm(block - centres[xp.maximum(lab, 0)], axis=1)
        if bool((lab < 0).any()):
            nearest = nearest_centres(block, centres, xp)[1]
            own = xp.where(lab >= 0, own, nearest)
        out[start:start + chunk] = own
    return out


def check_k(k: int, n_samples: int) -> None:
    """cuML crashes with an illegal memory access when k > n; every engine gets this message instead."""
    if k < 1:
        raise UsageError(f"--k must be at least 1, got {k}")
    if k > n_samples:
        raise UsageError(
            f"k={k} is larger than the number of users after filtering ({n_samples}); "
            "lower --k or relax --min-user-events / --min-item-events"
        )


class Centroids:
    """A clustering known by its centres: what a saved model keeps of whatever clusterer found them."""

    def __init__(self, cluster_centers: Any, algorithm: str = "kmeans", engine: str | None = None) -> None:
        self.cluster_centers_ = cluster_centers
        self.algorithm = algorithm
        self.engine_ = engine

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_centers_.shape[0])
