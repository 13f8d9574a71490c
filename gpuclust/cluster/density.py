"""Density clustering: DBSCAN and HDBSCAN (cuML on the GPU, scikit-learn on the CPU); noise is label -1.

Both give the KMeans interface: `fit(x, backend)` sets labels_ (xp int32, -1 = noise), noise_ (bool mask),
cluster_centers_ (member mean per found cluster), distances_ (to the own centre; for noise, to the nearest
centre), inertia_ (squared distances summed over members), n_clusters (found) and engine_.

The quality metrics in `gpuclust.assess.metrics` expect labels 0..k-1: pass them `non_noise(x, labels)`.
"""

from __future__ import annotations

from typing import Any

from gpuclust import accelerators
from gpuclust.backend import Backend, to_host
from gpuclust.cluster.kmeans import assign
from gpuclust.compat import accepted_kwargs
from gpuclust.errors import UsageError

DENSITY_ENGINES = ("auto", "cuml", "sklearn")


def non_noise(x: Any, labels: Any) -> tuple[Any, Any]:
    """Rows and labels of clustered users only (label >= 0), for metrics that need labels 0..k-1."""
    keep = labels >= 0
    return x[keep], labels[keep]


def group_means(x: Any, labels: Any, k: int, xp) -> Any:
    """(k, d) float32 mean of the rows of each label 0..k-1 (rows labelled < 0 are ignored).

    One weighted bincount per column: O(n * d) whatever k is, and no (n x k) one-hot.
    """
    keep = labels >= 0
    lab, rows = labels[keep], x[keep]
    counts = xp.bincount(lab, minlength=k).astype(xp.float64)
    sums = xp.empty((k, x.shape[1]), dtype=xp.float64)
    for j in range(x.shape[1]):
        sums[:, j] = xp.bincount(lab, weights=rows[:, j].astype(xp.float64), minlength=k)
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
            nearest = assign(block, centres, xp)[1]
            own = xp.where(lab >= 0, own, nearest)
        out[start:start + chunk] = own
    return out


class _DensityBase:
    """Shared fitting: run the engine for labels, then derive centres, distances, noise and inertia."""

    algorithm = ""
    _hint = ""

    def fit(self, x: Any, backend: Backend):
        if x.ndim != 2 or x.shape[0] < 2:
            raise UsageError(f"{self.algorithm} needs a 2-D matrix with at least 2 users, got shape {tuple(x.shape)}")
        self._validate(int(x.shape[0]))
        self.engine_ = self._pick_engine(backend)
        xp = backend.xp
        raw = self._fit_cuml(x, backend) if self.engine_ == "cuml" else self._fit_sklearn(x, backend)
        labels = _as_labels(raw, backend)
        found = int(labels.max()) + 1 if labels.shape[0] else 0
        if found < 1:
            raise UsageError(f"{self.algorithm} found no clusters: every user is noise; {self._hint}")
        self.labels_ = labels
        self.noise_ = labels < 0
        self.n_clusters = found
        self.cluster_centers_ = group_means(x, labels, found, xp)
        self.distances_ = own_distances(x, labels, self.cluster_centers_, xp)
        member = self.distances_[~self.noise_].astype(xp.float64)
        self.inertia_ = float((member**2).sum())
        self.n_noise_ = int(self.noise_.sum())
        return self

    def _validate(self, n: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _pick_engine(self, backend: Backend) -> str:
        engine = getattr(self, "engine", "auto")
        if engine not in DENSITY_ENGINES:
            raise UsageError(f"engine {engine!r} does not apply to {self.algorithm}: choose one of "
                             f"{', '.join(DENSITY_ENGINES)} (faiss and torch are KMeans engines)")
        cuml = accelerators.cuml()
        if engine == "cuml" and not cuml.usable:
            raise UsageError(f"engine 'cuml' is not usable here ({cuml.reason}); try --engine auto")
        if engine == "auto":
            return "cuml" if backend.on_gpu and cuml.usable else "sklearn"
        return engine


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
