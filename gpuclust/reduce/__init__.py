"""Dimensionality reduction before clustering: PCA (cuML, torch, scikit-learn) or UMAP (cuML, umap-learn)."""

from __future__ import annotations

from typing import Any

from gpuclust import registry
from gpuclust.config import ReduceConfig


def build_reducer(config: ReduceConfig, seed: int = 0) -> Any:
    """The reducer the config names, or None for "none" (the stage is skipped)."""
    if config.method == registry.NO_REDUCER:
        return None
    cls = registry.lookup(registry.REDUCERS, config.method, "reducer").load()
    if config.method == "pca":
        return cls(config.n_components, engine=config.engine, seed=seed)
    return cls(config.n_components, n_neighbors=config.n_neighbors, min_dist=config.min_dist, seed=seed,
               engine=config.engine)
