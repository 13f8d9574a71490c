"""One place that turns an algorithm name and its options into a clusterer with the KMeans interface."""

from __future__ import annotations

from gpuclust.cluster.agglomerative import Agglomerative
from gpuclust.cluster.density import DBSCAN, HDBSCAN
from gpuclust.cluster.kmeans import KMeans
from gpuclust.errors import UsageError

ALGORITHMS = ("kmeans", "dbscan", "hdbscan", "agglomerative")
# Algorithms told how many clusters to make; the density ones find their own number.
TAKES_K = ("kmeans", "agglomerative")

Clusterer = KMeans | DBSCAN | HDBSCAN | Agglomerative


def build_clusterer(algorithm: str = "kmeans", k: int = 8, engine: str = "auto", seed: int = 0, n_init: int = 3,
                    max_iter: int = 100, tol: float = 1e-4, eps: float = 0.5, min_samples: int | None = None,
                    min_cluster_size: int = 5) -> Clusterer:
    """The estimator for `algorithm`; options that do not apply to it are ignored.

    `engine` is a KMeans engine (auto, sklearn, faiss, cuml, torch); DBSCAN/HDBSCAN take auto, cuml or
    sklearn; agglomerative runs on scikit-learn whatever it says. `min_samples` None means 5 for DBSCAN and
    `min_cluster_size` for HDBSCAN.
    """
    if algorithm == "kmeans":
        return KMeans(k, engine, n_init, max_iter, tol, seed)
    if algorithm == "dbscan":
        return DBSCAN(eps, 5 if min_samples is None else min_samples, engine=engine)
    if algorithm == "hdbscan":
        return HDBSCAN(min_cluster_size, min_samples, engine=engine)
    if algorithm == "agglomerative":
        return Agglomerative(k)
    raise UsageError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
