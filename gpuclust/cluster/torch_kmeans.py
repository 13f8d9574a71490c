"""k-means in plain torch, for GPU machines that have CUDA torch but no RAPIDS; the same code runs on the CPU.

Greedy k-means++ seeding and Lloyd iterations as scikit-learn does them, so that inertia matches it:
- the data are centred first (the expanded ||x||^2 - 2xc + ||c||^2 loses precision far from the origin);
- distances come from chunked matmuls, so memory stays O(chunk * k) beyond the data itself;
- an empty cluster is re-seeded at the point farthest from its centre (that point leaves its cluster);
- `tol` is relative to the mean feature variance, checked against the summed squared centre shift;
- `n_init` restarts keep the lowest inertia.

Every random draw comes from one seeded *CPU* `torch.Generator` and is moved to the device: a seed gives the
same seeding on CUDA and on the CPU (up to float rounding), so the two devices' results can be compared.
Sums per cluster use a one-hot matmul on CUDA (deterministic, unlike atomic `index_add_`) and
`index_add_` on the CPU (cheaper there). TF32 matmuls (`torch.backends.cuda.matmul.allow_tf32`) would
cost accuracy here; torch leaves them off unless asked.
"""

from __future__ import annotations

import math
from typing import Any

from gpuclust.errors import UsageError

# Elements of one (chunk x k) float32 distance block: 16 Mi elements = 64 MiB.
CHUNK_ELEMENTS = 1 << 24
# Rows per float32 partial sum of a cluster's members; partial sums are totalled in float64.
SUM_ROWS = 1 << 16


class TorchKMeans:
    """Lloyd's k-means on torch tensors; `fit` sets cluster_centers_, labels_, inertia_, n_iter_.

    `init` is "k-means++" or a (k, d) array of starting centres (then a single run, as in scikit-learn).
    `device` None keeps the input's device. `n_empty_repairs_` counts re-seeded empty clusters.
    """

    def __init__(self, n_clusters: int = 8, n_init: int = 3, max_iter: int = 100, tol: float = 1e-4,
                 random_state: int = 0, init: Any = "k-means++", device: str | None = None,
                 chunk_elements: int = CHUNK_ELEMENTS) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init = init
        self.device = device
        self.chunk_elements = chunk_elements

    def fit(self, x: Any) -> TorchKMeans:
        import torch

        from gpuclust.cluster.outcome import check_k

        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.ndim != 2:
            raise UsageError(f"k-means needs a 2-D (users x features) matrix, got shape {tuple(x.shape)}")
        if self.n_init < 1 or self.max_iter < 1:
            raise UsageError(f"n_init and max_iter must be at least 1, got {self.n_init} and {self.max_iter}")
        n, d = (int(s) for s in x.shape)
        k = int(self.n_clusters)
        check_k(k, n)
        device = torch.device(self.device) if self.device is not None else x.device
        x = x.to(device=device, dtype=torch.float32)
        mean = x.mean(dim=0, dtype=torch.float64)
        xc = x - mean.to(torch.float32)  # a new tensor: the caller's data are never modified
        x_sq = (xc * xc).sum(dim=1)
        if not bool(torch.isfinite(x_sq).all()):  # NaN and inf reach the row sums; no n x d mask needed
            raise UsageError("the feature matrix has NaN or infinite values; clean or normalise it first")
        # scikit-learn's tolerance: tol x the mean per-feature variance (xc is centred: sum of squares / (n d)).
        tol = float(x_sq.sum(dtype=torch.float64)) / (n * d) * self.tol
        chunk = max(256, self.chunk_elements // max(k, 1))
        gen = torch.Generator().manual_seed(int(self.random_state))

        starts = self._starts(xc, x_sq, mean, k, gen, chunk)
        best = None
        repairs = 0
        for centres in starts:
            result = _lloyd(xc, x_sq, centres, self.max_iter, tol, chunk)
            repairs += result[3]
            if best is None or result[1] < best[1]:
                best = result
        centres, inertia, n_iter, _, labels = best
        self.cluster_centers_ = (centres.to(torch.float64) + mean).to(torch.float32)
        self.labels_ = labels.to(torch.int32)
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.n_empty_repairs_ = int(repairs)
        return self

    def _starts(self, xc, x_sq, mean, k: int, gen, chunk: int):
        """Yield starting centres (centred coordinates), one per run."""
        import torch

        if isinstance(self.init, str):
            if self.init != "k-means++":
                raise UsageError(f"unknown init {self.init!r}: choose 'k-means++' or pass a (k, d) array")
            for _ in range(self.n_init):
                yield _kmeans_plusplus(xc, x_sq, k, gen)
            return
        init = torch.as_tensor(self.init).to(device=xc.device, dtype=torch.float64)
        if tuple(init.shape) != (k, xc.shape[1]):
            raise UsageError(f"init has shape {tuple(init.shape)}; expected (k, features) = {(k, xc.shape[1])}")
        yield (init - mean).to(torch.float32)


def _sq_dist(xc, x_sq, centres):
    """(n, m) squared distances to m centres by one matmul; for small m (seeding)."""
    import torch

    c_sq = (centres * centres).sum(dim=1)
    d2 = torch.addmm(c_sq[None, :], xc, centres.T, alpha=-2.0)
    d2 += x_sq[:, None]
    return d2.clamp_min_(0.0)


def _kmeans_plusplus(xc, x_sq, k: int, gen):
    """Greedy k-means++ (2 + log k candidates per step, keep the one that lowers the potential most)."""
    import torch

    n, d = xc.shape
    device = xc.device
    trials = 2 + int(math.log(k))
    centres = torch.empty((k, d), dtype=torch.float32, device=device)
    first = int(torch.randint(n, (1,), generator=gen))
    centres[0] = xc[first]
    closest = _sq_dist(xc, x_sq, xc[first:first + 1])[:, 0].to(torch.float64)
    pot = closest.sum()
    for c in range(1, k):
        draws = torch.rand(trials, generator=gen, dtype=torch.float64).to(device) * pot
        candidates = torch.searchsorted(torch.cumsum(closest, dim=0), draws).clamp_(max=n - 1)
        d2 = torch.minimum(_sq_dist(xc, x_sq, xc[candidates]).to(torch.float64), closest[:, None])
        pots = d2.sum(dim=0)
        best = torch.argmin(pots)
        closest = d2[:, best]
        pot = pots[best]
        centres[c] = xc[candidates[best]]
    return centres


def _nearest(xc, x_sq, centres, chunk: int):
    """Nearest centre and squared distance to it, chunk by chunk."""
    import torch

    n = xc.shape[0]
    c_sq = (centres * centres).sum(dim=1)
    labels = torch.empty(n, dtype=torch.int64, device=xc.device)
    mind = torch.empty(n, dtype=torch.float32, device=xc.device)
    for s in range(0, n, chunk):
        d2 = torch.addmm(c_sq[None, :], xc[s:s + chunk], centres.T, alpha=-2.0)
        d2 += x_sq[s:s + chunk, None]
        torch.min(d2, dim=1, out=(mind[s:s + chunk], labels[s:s + chunk]))
    return labels, mind.clamp_min_(0.0)


def _cluster_sums(xc, labels, k: int, chunk: int):
    """Per-cluster sums of rows (float32 partial sums over <= SUM_ROWS rows, totalled in float64) and counts."""
    import torch

    d = xc.shape[1]
    step = min(chunk, SUM_ROWS)
    sums = torch.zeros((k, d), dtype=torch.float64, device=xc.device)
    part = torch.empty((k, d), dtype=torch.float32, device=xc.device)
    for s in range(0, xc.shape[0], step):
        block, lab = xc[s:s + step], labels[s:s + step]
        if xc.is_cuda:
            onehot = torch.zeros((block.shape[0], k), dtype=torch.float32, device=xc.device)
            onehot.scatter_(1, lab[:, None], 1.0)
            torch.mm(onehot.T, block, out=part)
        else:
            part.zero_().index_add_(0, lab, block)
        sums += part
    counts = torch.bincount(labels, minlength=k).to(torch.float64)
    return sums, counts


def _repair_empty(xc, labels, mind, sums, counts) -> int:
    """Move the points farthest from their centres into empty clusters (scikit-learn's rule)."""
    import torch

    empty = torch.nonzero(counts == 0).flatten()
    n_empty = int(empty.numel())
    if n_empty == 0:
        return 0
    far = torch.topk(mind, min(n_empty, mind.numel())).indices
    empty = empty[: far.numel()]
    rows = xc[far].to(torch.float64)
    old = labels[far]
    sums.index_add_(0, old, -rows)
    counts.index_add_(0, old, -torch.ones_like(old, dtype=torch.float64))
    sums[empty] = rows
    counts[empty] = 1.0
    labels[far] = empty
    return n_empty


def _lloyd(xc, x_sq, centres, max_iter: int, tol: float, chunk: int):
    """One Lloyd run; returns (centres, inertia, n_iter, empty repairs, labels)."""
    import torch

    k = centres.shape[0]
    repairs = 0
    labels = None
    n_iter = 0
    converged_strict = False
    for step in range(max_iter):
        n_iter = step + 1
        new_labels, mind = _nearest(xc, x_sq, centres, chunk)
        sums, counts = _cluster_sums(xc, new_labels, k, chunk)
        repairs += _repair_empty(xc, new_labels, mind, sums, counts)
        new_centres = (sums / counts.clamp_min(1.0)[:, None]).to(torch.float32)
        # An empty cluster that could not be repaired (fewer distinct points than k) keeps its centre.
        new_centres = torch.where((counts > 0)[:, None], new_centres, centres)
        shift = float(((new_centres - centres).to(torch.float64) ** 2).sum())
        if labels is not None and torch.equal(labels, new_labels):
            converged_strict = True
            centres = new_centres
            break
        labels, centres = new_labels, new_centres
        if shift <= tol:
            break
    if not converged_strict:  # labels must match the final centres
        labels, _ = _nearest(xc, x_sq, centres, chunk)
    inertia = _inertia(xc, labels, centres, chunk)
    return centres, inertia, n_iter, repairs, labels


def _inertia(xc, labels, centres, chunk: int) -> float:
    """Exact sum of squared distances to the assigned centres (float64), chunked."""
    import torch

    total = torch.zeros((), dtype=torch.float64, device=xc.device)
    for s in range(0, xc.shape[0], chunk):
        diff = xc[s:s + chunk] - centres[labels[s:s + chunk]]
        total += (diff.to(torch.float64) ** 2).sum()
    return float(total)
