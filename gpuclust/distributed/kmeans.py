"""KMeans over row blocks: cuML's multi-GPU KMeans on GPU workers, a distributed Lloyd on CPU workers.

The Lloyd loop: centres start from k-means++ (scikit-learn's, `n_init` tries) on a seeded sample of
users, then each iteration sends the k x d centres to the blocks, each block returns its per-cluster
sums, counts and inertia, and the client adds them up and moves the centres, until the total squared
shift is below `tol` times the mean feature variance (scikit-learn's rule) or `max_iter`. Only k x d
numbers per block cross the network per iteration. An empty cluster keeps its centre.

Labels and distances are then the nearest centre per block (`cluster.outcome.nearest_centres`), as on
one machine; the metrics need k x d sums (Calinski-Harabasz, Davies-Bouldin) and a sample (silhouette).
"""

from __future__ import annotations

import numpy as np

from gpuclust.backend import array_module, to_host
from gpuclust.cluster.kmeans import INIT_SAMPLE, KMeansParams
from gpuclust.cluster.outcome import check_k, nearest_centres
from gpuclust.distributed.blocks import Blocks
from gpuclust.segments import group_sums


def _take(block, local):
    xp = array_module(block)
    return to_host(block[xp.asarray(local)])


def _lloyd_step(block, centres: np.ndarray):
    """This block's share of one Lloyd iteration: per-cluster sums (float64), counts and inertia."""
    xp = array_module(block)
    k = centres.shape[0]
    labels, dist = nearest_centres(block, xp.asarray(centres, dtype=xp.float32), xp)
    sums, counts = group_sums(block, labels, k, xp)
    return to_host(sums), to_host(counts), float((dist.astype(xp.float64) ** 2).sum())


def _assign(block, centres: np.ndarray):
    xp = array_module(block)
    return nearest_centres(block, xp.asarray(centres, dtype=xp.float32), xp)


def _labels_of(assigned):
    return assigned[0]


def _distances_of(assigned):
    return assigned[1]


class DistributedKMeans(KMeansParams):
    """Lloyd's k-means over `Blocks` of the fused matrix; sets cluster_centers_ (host), inertia_, n_iter_,
    engine_ and init_sample_."""

    def fit(self, x: Blocks, on_gpu: bool) -> DistributedKMeans:
        check_k(self.n_clusters, x.n_rows)
        if on_gpu and self.engine in ("auto", "cuml"):
            return self._fit_cuml(x)
        if self.engine == "cuml":
            from gpuclust.errors import UsageError

            raise UsageError("--engine cuml needs GPU workers (dask-cuda); use --engine auto on CPU workers")
        return self._fit_lloyd(x)

    def _fit_lloyd(self, x: Blocks) -> DistributedKMeans:
        from sklearn.cluster import KMeans as SkKMeans

        n, k = x.n_rows, self.n_clusters
        rng = np.random.default_rng(self.random_state)
        rows = np.arange(n) if n <= INIT_SAMPLE else np.sort(rng.choice(n, INIT_SAMPLE, replace=False))
        sample = np.concatenate(x.rows(_take, rows)).astype(np.float32)
        start = SkKMeans(n_clusters=k, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                         random_state=self.random_state).fit(sample)
        centres = start.cluster_centers_.astype(np.float64)
        threshold = self.tol * float(sample.var(axis=0).mean())
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            sums, counts, inertia = x.total(_lloyd_step, centres=centres.astype(np.float32))
            moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centres)
            shift = float(((moved - centres) ** 2).sum())
            centres = moved
            self.n_iter_ += 1
            if shift <= threshold:
                break
        self.cluster_centers_ = centres.astype(np.float32)
        self.inertia_ = float(inertia)
        self.engine_ = "dask-lloyd"
        self.init_sample_ = int(len(rows))
        return self

    def _fit_cuml(self, x: Blocks) -> DistributedKMeans:
        """cuML's multi-node multi-GPU KMeans on a dask array of the CuPy blocks (GPU workers)."""
        import cupy
        import dask
        import dask.array as da
        from cuml.dask.cluster import KMeans as DaskCuKMeans

        d = int(x.client.submit(_width, x.futures[0]).result())
        arrays = [da.from_delayed(dask.delayed(f), shape=(size, d), dtype=np.float32,
                                  meta=cupy.empty((0, d), dtype=cupy.float32))
                  for f, size in zip(x.futures, x.sizes, strict=True)]
        # random_state explicitly: without one multi-GPU KMeans can hang (DESIGN.md).
        model = DaskCuKMeans(client=x.client, n_clusters=self.n_clusters, max_iter=self.max_iter, tol=self.tol,
                             random_state=self.random_state, init="scalable-k-means++")
        model.fit(da.concatenate(arrays, axis=0))
        self.cluster_centers_ = to_host(model.cluster_centers_).astype(np.float32)
        self.n_iter_ = getattr(model, "n_iter_", None)
        self.inertia_ = None
        self.engine_ = "cuml.dask"
        return self


def _width(block) -> int:
    return int(block.shape[1])


def assign(x: Blocks, centres: np.ndarray) -> tuple[Blocks, Blocks]:
    """(labels, distances) per block: the nearest centre, computed where the blocks live."""
    assigned = x.map(_assign, centres=centres)
    return assigned.map(_labels_of), assigned.map(_distances_of)


# --- metrics by reductions ------------------------------------------------------------------------

def _cluster_sums(block, labels, k: int):
    sums, counts = group_sums(block, labels, k, array_module(block))
    return to_host(sums), to_host(counts)


def _cluster_spreads(block, labels, centroids: np.ndarray):
    xp = array_module(block)
    c = xp.asarray(centroids)
    diff = block.astype(xp.float64) - c[labels]
    norms = xp.sqrt((diff ** 2).sum(axis=1))
    k = centroids.shape[0]
    return float((norms ** 2).sum()), to_host(xp.bincount(labels, weights=norms, minlength=k))


def calinski_davies(x: Blocks, labels: Blocks, k: int) -> tuple[float, float]:
    """Calinski-Harabasz and Davies-Bouldin over all users, as `quality.metrics` computes them, from
    per-cluster sums, counts, within-cluster squares and mean distances (two reductions)."""
    n = x.n_rows
    if k < 2:
        return float("nan"), float("nan")
    sums, counts = x.total(_cluster_sums, labels, k=k)
    centroids = sums / np.maximum(counts, 1)[:, None]
    mean = sums.sum(axis=0) / n
    within, spread_sums = x.total(_cluster_spreads, labels, centroids=centroids)
    between = float((counts * ((centroids - mean) ** 2).sum(axis=1)).sum())
    ch = float("nan") if k >= n else (float("inf") if within == 0 else between * (n - k) / (within * (k - 1)))
    spread = spread_sums / np.maximum(counts, 1)
    gaps = np.sqrt(((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))
    ratio = (spread[:, None] + spread[None, :]) / np.where(gaps > 0, gaps, np.inf)
    ratio[np.arange(k), np.arange(k)] = 0.0
    db = float(ratio.max(axis=1)[counts > 0].mean())
    return ch, db
