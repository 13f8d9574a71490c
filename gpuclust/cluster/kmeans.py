"""KMeans with swappable engines: cuML, torch and FAISS on the GPU; scikit-learn, FAISS and torch on the CPU.

Every engine gets the same seed, k and iteration budget; `auto` takes the fastest usable engine for
the backend's device. Labels, centres and distances come back on the backend's array library.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np

from gpuclust import accelerators
from gpuclust.backend import Backend, from_torch, to_host, to_torch
from gpuclust.errors import UsageError

ENGINES = ("auto", "sklearn", "faiss", "cuml", "torch")


def check_k(k: int, n_samples: int) -> None:
    """cuML crashes with an illegal memory access when k > n; every engine gets this message instead."""
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    if k > n_samples:
        raise UsageError(
            f"k={k} is larger than the number of users after filtering ({n_samples}); "
            "lower --k or relax --min-user-events / --min-item-events"
        )


def pick_engine(engine: str, backend: Backend) -> str:
    if engine not in ENGINES:
        raise UsageError(f"unknown KMeans engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if engine == "cuml" and not accelerators.cuml().usable:
        raise UsageError(f"engine 'cuml' is not usable here ({accelerators.cuml().reason}); try --engine auto")
    if engine == "faiss":
        probe = accelerators.faiss_cpu()
        if not probe.usable:
            raise UsageError(f"engine 'faiss' is not usable here ({probe.reason}); pip install faiss-cpu")
    if engine == "torch" and importlib.util.find_spec("torch") is None:
        raise UsageError("engine 'torch' is not usable here (PyTorch is not installed); pip install torch")
    if engine != "auto":
        return engine
    if backend.on_gpu:
        # cuML's k-means is the fastest; torch comes next on GPU machines without RAPIDS (the data stay on
        # the GPU via DLPack), before FAISS, whose training copies the data to the host.
        if accelerators.cuml().usable:
            return "cuml"
        if accelerators.torch_cuda().usable:
            return "torch"
        if accelerators.faiss_gpu().usable:
            return "faiss"
    # On the CPU scikit-learn's k-means++ and Elkan/Lloyd beat faiss.Kmeans (random init) on both
    # time and inertia at 100k x 60, k=20 (benchmarks/results/kmeans-cpu.md).
    return "sklearn"


class KMeans:
    """Lloyd's k-means; `fit` sets labels_, cluster_centers_, inertia_, distances_, engine_."""

    algorithm = "kmeans"

    def __init__(self, n_clusters: int = 8, engine: str = "auto", n_init: int = 3, max_iter: int = 100,
                 tol: float = 1e-4, random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.engine = engine
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, x: Any, backend: Backend) -> KMeans:
        check_k(self.n_clusters, int(x.shape[0]))
        self.engine_ = pick_engine(self.engine, backend)
        fit = {"sklearn": self._fit_sklearn, "faiss": self._fit_faiss, "cuml": self._fit_cuml,
               "torch": self._fit_torch}[self.engine_]
        centres = fit(x, backend)
        xp = backend.xp
        self.cluster_centers_ = xp.asarray(centres, dtype=xp.float32)
        self.labels_, self.distances_ = assign(x, self.cluster_centers_, xp)
        self.inertia_ = float((self.distances_.astype(xp.float64) ** 2).sum())
        return self

    def predict(self, x: Any, backend: Backend):
        return assign(x, self.cluster_centers_, backend.xp)[0]

    # --- engines: each returns centres; labels are assigned once, the same way, afterwards ----

    def _fit_sklearn(self, x, backend: Backend):
        from sklearn.cluster import KMeans as SkKMeans

        model = SkKMeans(n_clusters=self.n_clusters, n_init=self.n_init, max_iter=self.max_iter,
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
            d, self.n_clusters, niter=self.max_iter, nredo=self.n_init, seed=self.random_state % 2**31,
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

        model = CuKMeans(n_clusters=self.n_clusters, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                         random_state=self.random_state, output_type="cupy")
        model.fit(x)
        self.n_iter_ = int(getattr(model, "n_iter_", self.max_iter))
        return model.cluster_centers_

    def _fit_torch(self, x, backend: Backend):
        from gpuclust.cluster.torch_kmeans import TorchKMeans

        model = TorchKMeans(self.n_clusters, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                            random_state=self.random_state, device=backend.torch_device)
        model.fit(to_torch(x, backend))  # zero-copy in; the centred working copy lives on the torch device
        self.n_iter_ = model.n_iter_
        return from_torch(model.cluster_centers_, backend)


def assign(x, centres, xp, chunk: int = 65_536):
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
