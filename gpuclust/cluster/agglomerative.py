"""Agglomerative (hierarchical) clustering with scikit-learn on the host, with the KMeans interface.

Without a connectivity graph it is O(n^2) in memory (Ward keeps a condensed distance matrix: 30,000 rows
are 3.6 GB of float64), so larger inputs are refused with a pointer to sampling or k-means.
"""

from __future__ import annotations

from typing import Any

from gpuclust.backend import Backend, to_host
from gpuclust.cluster.outcome import check_k
from gpuclust.errors import UsageError

LINKAGES = ("ward", "complete", "average", "single")
MAX_ROWS = 30_000


class Agglomerative:
    """Bottom-up merging into `n_clusters` groups; `fit` sets labels_ and engine_ ("sklearn": there is no
    GPU engine); centres are the member means (`cluster.outcome`)."""

    algorithm = "agglomerative"

    def __init__(self, n_clusters: int = 8, linkage: str = "ward", max_rows: int = MAX_ROWS) -> None:
        self.n_clusters = n_clusters
        self.linkage = linkage
        self.max_rows = max_rows

    def fit(self, x: Any, backend: Backend) -> Agglomerative:
        from sklearn.cluster import AgglomerativeClustering

        n = int(x.shape[0])
        if self.linkage not in LINKAGES:
            raise UsageError(f"unknown linkage {self.linkage!r}: choose one of {', '.join(LINKAGES)}")
        check_k(self.n_clusters, n)
        if n > self.max_rows:
            raise UsageError(
                f"agglomerative clustering needs O(n^2) memory and {n} users is above its limit of "
                f"{self.max_rows}; pass --sample-users {self.max_rows} or use --algorithm kmeans"
            )
        model = AgglomerativeClustering(n_clusters=self.n_clusters, linkage=self.linkage)
        labels = model.fit(to_host(x)).labels_
        self.engine_ = backend.pick_engine(self.algorithm, "sklearn")
        self.labels_ = backend.asarray(labels).astype(backend.xp.int32)
        return self
