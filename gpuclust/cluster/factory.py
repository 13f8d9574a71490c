"""One place that turns the cluster settings into a clusterer of the registry's algorithms."""

from __future__ import annotations

from typing import Any

from gpuclust import registry
from gpuclust.config import ClusterConfig


def build_clusterer(config: ClusterConfig, seed: int = 0, k: int | None = None) -> Any:
    """The estimator for `config.algorithm`; `k` overrides `config.k` (a k sweep tries several).

    `min_samples` None means 5 for DBSCAN and `min_cluster_size` for HDBSCAN, as in both libraries."""
    cls = registry.lookup(registry.ALGORITHMS, config.algorithm, "algorithm").load()
    k = config.k if k is None else k
    if config.algorithm == "kmeans":
        return cls(k, config.engine, config.n_init, config.max_iter, config.tol, seed)
    if config.algorithm == "dbscan":
        return cls(config.eps, 5 if config.min_samples is None else config.min_samples, engine=config.engine)
    if config.algorithm == "hdbscan":
        return cls(config.min_cluster_size, config.min_samples, engine=config.engine)
    if config.algorithm == "predictive":
        return cls(k, config.engine, config.balance, config.epochs, random_state=seed)
    return cls(k)
