"""KMeans with swappable engines: cuML, torch and FAISS on the GPU; scikit-learn, FAISS and torch on the CPU.

Every engine gets the same seed, k and iteration budget and only learns the centres; labels are the
nearest centre, computed once the same way. `auto` takes the registry's preferred usable engine for
the backend's device. Labels and centres come back on the backend's array library.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpuclust import accelerators
from gpuclust.backend import Backend, from_torch, to_host, to_torch
from gpuclust.cluster.outcome import check_k, nearest_centres

CPU_RESTARTS, GPU_RESTARTS = 3, 10
# Users k-means++ seeds from: enough for every cluster to be seen many times. Beyond it the seeding's
# passes of users x k distances cost more than the Lloyd iterations (scikit-learn at 1M users, k=20,
# 3 restarts: 10.2 s of seeding, 4.5 s of Lloyd).
INIT_SAMPLE = 100_000


def restarts(n_init: int | None, on_gpu: bool) -> int:
    """k-means restarts: as given, else per device. On a GPU a restart costs little next to reading the
    data, and the torch engine's single k-means++ draws landed below scikit-learn's ARI with 3 (issue 17)."""
    return int(n_init) if n_init is not None else GPU_RESTARTS if on_gpu else CPU_RESTARTS


class KMeansParams:
    """The settings every k-means here takes (one process or a Dask cluster), stored as given."""

    algorithm = "kmeans"

    def __init__(self, n_clusters: int = 8, engine: str = "auto", n_init: int | None = None, max_iter: int = 100,
                 tol: float = 1e-4, random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.engine = engine
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state


class KMeans(KMeansParams):
    """Lloyd's k-means; `fit` sets labels_, cluster_centers_, inertia_, n_iter_, n_init_ and engine_."""

    def fit(self, x: Any, backend: Backend) -> KMeans:
        check_k(self.n_clusters, int(x.shape[0]))
        self.engine_ = backend.pick_engine("kmeans", self.engine)
        on_gpu = backend.on_gpu and (self.engine_ != "faiss" or accelerators.faiss_gpu().usable) \
            and self.engine_ != "sklearn"
        self.n_init_ = restarts(self.n_init, on_gpu)
        fit = {"sklearn": self._fit_sklearn, "faiss": self._fit_faiss, "cuml": self._fit_cuml,
               "torch": self._fit_torch}[self.engine_]
        centres = fit(x, backend)
        xp = backend.xp
        self.cluster_centers_ = xp.asarray(centres, dtype=xp.float32)
        self.labels_, distances = nearest_centres(x, self.cluster_centers_, xp)
        self.inertia_ = float((distances.astype(xp.float64) ** 2).sum())
        return self

    # --- engines: each returns centres; labels are assigned once, the same way, afterwards ----

    def _fit_sklearn(self, x, backend: Backend):
        from sklearn.cluster import KMeans as SkKMeans

        init = plusplus_on_a_sample if x.shape[0] > INIT_SAMPLE else "k-means++"
        model = SkKMeans(n_clusters=self.n_clusters, init=init, n_init=self.n_init_, max_iter=self.max_iter,
                         tol=self.tol, random_state=self.random_state)
        model.fit(to_host(x))
        self.n_iter_ = int(model.n_iter_)
        return backend.asarray(model.cluster_centers_)

    def _fit_faiss(self, x, backend: Backend):
        import faiss

        host = np.ascontiguousarray(to_host(x), dtype=np.float32)  # faiss.Kmeans trains on host data only
        n, d = host.shape
        model = faiss.Kmeans(
            # FAISS keeps its seed in a C int: fold seeds of 2**31 and above (the config allows up to 2**32-1).
            d, self.n_clusters, niter=self.max_iter, nredo=self.n_init_, seed=self.random_state % 2**31,
            gpu=backend.on_gpu and accelerators.faiss_gpu().usable,
            # Without this FAISS silently trains on k * 256 points only.
            max_points_per_centroid=max(256, math.ceil(n / self.n_clusters) + 1),
            verbose=False,
        )
        model.train(host)
        self.n_iter_ = self.max_iter
        return backend.asarray(model.centroids)

    def _fit_cuml(self, x, backend: Backend):
        from cuml.cluster import KMeans as CuKMeans

        model = CuKMeans(n_clusters=self.n_clusters, n_init=self.n_init_, max_iter=self.max_iter, tol=self.tol,
                         random_state=self.random_state, output_type="cupy")
        model.fit(x)
        self.n_iter_ = int(getattr(model, "n_iter_", self.max_iter))
        return model.cluster_centers_

    def _fit_torch(self, x, backend: Backend):
        from gpuclust.cluster.torch_kmeans import TorchKMeans

        model = TorchKMeans(self.n_clusters, n_init=self.n_init_, max_iter=self.max_iter, tol=self.tol,
                            random_state=self.random_state, device=backend.torch_device)
        model.fit(to_torch(x))  # zero-copy in; the centred working copy lives on the torch device
        self.n_iter_ = model.n_iter_
        return from_torch(model.cluster_centers_, backend)


def plusplus_on_a_sample(x: np.ndarray, n_clusters: int, random_state: np.random.RandomState) -> np.ndarray:
    """scikit-learn's k-means++ on INIT_SAMPLE rows of `x` drawn by its seeded state (an `init` callable:
    each restart draws its own sample); Lloyd's iterations then run on every row."""
    from sklearn.cluster import kmeans_plusplus

    rows = random_state.choice(x.shape[0], INIT_SAMPLE, replace=False)
    centres, _ = kmeans_plusplus(x[rows], n_clusters, random_state=random_state)
    return centres
