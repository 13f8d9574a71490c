"""Dimensionality reduction before clustering: `build_reducer(name, ...)` gives PCA, UMAP or None."""

from __future__ import annotations

from gpuclust.errors import UsageError
from gpuclust.reduce.pca import PCA, PCA_ENGINES
from gpuclust.reduce.umap import UMAP

REDUCERS = ("none", "pca", "umap")

__all__ = ["PCA", "PCA_ENGINES", "REDUCERS", "UMAP", "build_reducer"]


def build_reducer(name: str, n_components: int, seed: int = 0, *, n_neighbors: int = 15, min_dist: float = 0.1,
                  pca_engine: str = "auto") -> PCA | UMAP | None:
    """The reducer `name` names, or None for "none" (skip the stage)."""
    if name == "none":
        return None
    if name == "pca":
        return PCA(n_components, engine=pca_engine, seed=seed)
    if name == "umap":
        return UMAP(n_components, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    raise UsageError(f"unknown reducer {name!r}: choose one of {', '.join(REDUCERS)}")
