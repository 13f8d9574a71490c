"""Density clustering: DBSCAN and HDBSCAN (cuML on the GPU, scikit-learn on the CPU); noise is label -1.

`fit(x, backend)` sets labels_ (xp int32, -1 = noise), n_noise_ and engine_; centres (member means),
distances and noise masks are derived like every clusterer's (`cluster.outcome`). Quality metrics
that expect labels 0..k-1 are computed over the clustered users only.
"""

from __future__ import annotations

from typing import Any

from gpuclust.backend import Backend, to_host
from gpuclust.compat import accepted_kwargs
from gpuclust.errors import UsageError


class _DensityBase:
    """Shared fitting: run the engine for labels, then derive centres, distances, noise and inertia."""

    algorithm = ""
    _hint = ""

    def fit(self, x: Any, backend: Backend):
        if x.ndim != 2 or x.shape[0] < 2:
            raise UsageError(f"{self.algorithm} needs a 2-D matrix with at least 2 users, got shape {tuple(x.shape)}")
        self._validate(int(x.shape[0]))
        self.engine_ = backend.pick_engine(self.algorithm, self.engine)
        raw = self._fit_cuml(x, backend) if self.engine_ == "cuml" else self._fit_sklearn(x, backend)
        self.labels_ = _as_labels(raw, backend)
        if not bool((self.labels_ >= 0).any()):
            raise UsageError(f"{self.algorithm} found no clusters: every user is noise; {self._hint}")
        self.n_noise_ = int((self.labels_ < 0).sum())
        return self

    def _validate(self, n: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _as_labels(raw: Any, backend: Backend):
    """Engine labels -> backend xp int32 with every negative code (scikit-learn HDBSCAN: -2, -3) as -1."""
    xp = backend.xp
    labels = backend.asarray(raw).astype(xp.int32)
    return xp.where(labels < 0, -1, labels).astype(xp.int32)


class DBSCAN(_DensityBase):
    """DBSCAN: users with `min_samples` neighbours within `eps` are cores; clusters grow from cores.

    `max_mbytes_per_batch` bounds cuML's pairwise-distance batches; None sizes it from the GPU memory that is
    free now (cuML's own default uses total memory and ignores what torch holds).
    """

    algorithm = "dbscan"
    _hint = "raise --eps (the neighbourhood radius) or lower --min-samples"

    def __init__(self, eps: float = 0.5, min_samples: int = 5, max_mbytes_per_batch: int | None = None,
                 engine: str = "auto") -> None:
        self.eps = eps
        self.min_samples = min_samples
        self.max_mbytes_per_batch = max_mbytes_per_batch
        self.engine = engine

    def _validate(self, n: int) -> None:
        if not self.eps > 0:
            raise UsageError(f"eps must be greater than 0, got {self.eps}")
        if self.min_samples < 1:
            raise UsageError(f"min_samples must be at least 1, got {self.min_samples}")
        if self.max_mbytes_per_batch is not None and self.max_mbytes_per_batch < 1:
            raise UsageError(f"max_mbytes_per_batch must be at least 1, got {self.max_mbytes_per_batch}")

    def _fit_sklearn(self, x, backend: Backend):
        from sklearn.cluster import DBSCAN as SkDBSCAN

        return SkDBSCAN(eps=self.eps, min_samples=self.min_samples).fit(to_host(x)).labels_

    def _fit_cuml(self, x, backend: Backend):
        from cuml.cluster import DBSCAN as CuDBSCAN

        batch = self.max_mbytes_per_batch or _free_gpu_mbytes(backend) // 4
        model = CuDBSCAN(eps=self.eps, min_samples=self.min_samples, max_mbytes_per_batch=max(int(batch), 64),
                         output_type="cupy")
        return model.fit(backend.xp.ascontiguousarray(x, dtype=backend.xp.float32)).labels_


class HDBSCAN(_DensityBase):
    """HDBSCAN: the clusters that persist across densities; no radius to choose.

    Euclidean only (cuML supports nothing else): L2-normalise the features first for cosine-like behaviour.
    `min_samples` None means `min_cluster_size`, as in both libraries.
    """

    algorithm = "hdbscan"
    _hint = "lower --min-cluster-size (or --min-samples)"

    def __init__(self, min_cluster_size: int = 5, min_samples: int | None = None, engine: str = "auto") -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.engine = engine

    def _validate(self, n: int) -> None:
        if self.min_cluster_size < 2:
            raise UsageError(f"min_cluster_size must be at least 2, got {self.min_cluster_size}")
        if self.min_samples is not None and self.min_samples < 1:
            raise UsageError(f"min_samples must be at least 1, got {self.min_samples}")
        if self.min_cluster_size > n:
            raise UsageError(f"min_cluster_size={self.min_cluster_size} is larger than the number of users ({n}); "
                             "lower --min-cluster-size")

    def _fit_sklearn(self, x, backend: Backend):
        from sklearn.cluster import HDBSCAN as SkHDBSCAN

        # copy=True: never modify the caller's matrix (and no FutureWarning about the default) where taken.
        model = SkHDBSCAN(min_cluster_size=self.min_cluster_size, min_samples=self.min_samples,
                          **accepted_kwargs(SkHDBSCAN, copy=True))
        return model.fit(to_host(x)).labels_

    def _fit_cuml(self, x, backend: Backend):
        from cuml.cluster import HDBSCAN as CuHDBSCAN

        model = CuHDBSCAN(min_cluster_size=self.min_cluster_size, min_samples=self.min_samples,
                          metric="euclidean", output_type="cupy")
        return model.fit(backend.xp.ascontiguousarray(x, dtype=backend.xp.float32)).labels_


def _free_gpu_mbytes(backend: Backend) -> int:
    free, _total = backend.xp.cuda.runtime.memGetInfo()
    return int(free) // 2**20
