"""UMAP before clustering (or for 2-D maps): cuML on the GPU, umap-learn on the CPU as an optional extra.

UMAP keeps local neighbourhoods, which helps density clustering find groups that PCA would blur; it is
seeded (slower in both libraries, but a run is repeatable). Without cuML or umap-learn it is a UsageError
saying what to install: never a silent switch to another method.
"""

from __future__ import annotations

from typing import Any

from gpuclust.backend import Backend, to_host
from gpuclust.errors import UsageError
from gpuclust.reduce.pca import _check_matrix


class UMAP:
    """Embed users in `n_components` dimensions; `fit_transform` returns xp float32 and sets engine_, info_."""

    def __init__(self, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
                 engine: str = "auto") -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.seed = seed
        self.engine = engine

    def fit_transform(self, x: Any, backend: Backend):
        n, d = _check_matrix(x, "UMAP")
        if not 2 <= self.n_neighbors < n:
            raise UsageError(f"UMAP n_neighbors={self.n_neighbors} must be at least 2 and below the number of "
                             f"users ({n}); lower reduce.n_neighbors in the config")
        if not 1 <= self.n_components < n - 1:
            raise UsageError(f"UMAP n_components={self.n_components} must be between 1 and {n - 2} for {n} users")
        if self.min_dist < 0:
            raise UsageError(f"UMAP min_dist must be at least 0, got {self.min_dist}")
        self.engine_ = backend.pick_engine("umap", self.engine)
        xp = backend.xp
        if self.engine_ == "cuml":
            from cuml.manifold import UMAP as CuUMAP

            model = CuUMAP(n_components=self.n_components, n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                           random_state=self.seed, output_type="cupy")
            out = model.fit_transform(xp.ascontiguousarray(x, dtype=xp.float32))
        else:
            import umap

            # A random_state forces one thread in umap-learn anyway; saying so avoids its warning.
            model = umap.UMAP(n_components=self.n_components, n_neighbors=self.n_neighbors,
                              min_dist=self.min_dist, random_state=self.seed, n_jobs=1)
            out = model.fit_transform(to_host(x))
        self.info_ = {
            "method": "umap", "engine": self.engine_, "n_components": int(self.n_components),
            "n_neighbors": int(self.n_neighbors), "min_dist": float(self.min_dist), "input_dims": d,
        }
        return backend.asarray(out).astype(xp.float32)
