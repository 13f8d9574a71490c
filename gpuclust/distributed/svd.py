"""The randomized truncated SVD of `features.svd` over row blocks: products with the blocks run where
they live, and every global quantity is a sum over blocks (Halko et al. 2011).

    Y = X @ Omega        per block          Y_p = X_p @ Omega
    CholQR2(Y)           Gram reduction     G = sum_p Y_p.T @ Y_p;  Q_p = Y_p @ inv(chol(G)).T, twice
    Z = X.T @ Q          reduction          Z = sum_p X_p.T @ Q_p   (items x width: small, on the client)

so only width x width Gram matrices and items x width products cross the network. The random sketch
is drawn on the client from the seed; with the same seed it is the single-process CPU sketch.
"""

from __future__ import annotations

import numpy as np

from gpuclust.backend import to_host
from gpuclust.distributed.blocks import Blocks
from gpuclust.features.svd import cholesky_factor, component_signs, orthonormalise


def _times(block, right):
    """block @ right, on the block's device; float64 in, float64 out (the CholQR2 steps)."""
    from gpuclust.backend import array_module

    xp = array_module(block.data if hasattr(block, "data") and hasattr(block, "indptr") else block)
    out = block @ xp.asarray(right, dtype=block.dtype if block.dtype == np.float64 else np.float32)
    return xp.asarray(out)


def _gram(q):
    return to_host(q.T @ q).astype(np.float64)


def _transposed_times(block, q):
    """block.T @ q: one block's share of X.T @ Q (host float64)."""
    return to_host(block.T @ q).astype(np.float64)


def _as64(q):
    return q.astype(np.float64)


def _as32(q):
    return q.astype(np.float32)


def _square_sum(block):
    data = block.data if hasattr(block, "indptr") else block
    return float((data.astype(np.float64) ** 2).sum())


def orthonormal_blocks(y: Blocks) -> Blocks:
    """CholQR2 over row blocks, in float64: two Gram reductions. Where the Gram matrix is not positive
    definite (y near rank-deficient), an eigendecomposition of it gives the basis instead."""
    q = y.map(_as64)
    for _ in range(2):
        gram = q.total(_gram)
        chol = cholesky_factor(gram, np)
        if chol is None:
            values, vectors = np.linalg.eigh(gram)
            keep = values > values.max() * 1e-12
            q = q.map(_times, right=vectors[:, keep] / np.sqrt(values[keep]))
            break
        q = q.map(_times, right=np.linalg.inv(chol).T)
    return q.map(_as32)


def block_randomized_svd(x: Blocks, n_cols: int, k: int, seed: int = 0, oversamples: int = 10,
                         power_iterations: int = 4) -> tuple[np.ndarray, np.ndarray, float]:
    """(S, Vt, sum of squares of X) of the top k singular triplets of the row-stacked blocks `x`; host arrays.
    Users are projected with X_p @ Vt.T by whoever needs them (the featuriser's transform)."""
    n, m = x.n_rows, n_cols
    k = min(k, n, m)
    width = min(k + oversamples, n, m)
    omega = np.random.default_rng(seed).standard_normal((m, width), dtype=np.float32)
    q = orthonormal_blocks(x.map(_times, right=omega))
    for _ in range(power_iterations):
        z = orthonormalise(x.total(_transposed_times, q), np)
        q = orthonormal_blocks(x.map(_times, right=z))
    b = x.total(_transposed_times, q).T
    _, s, vt = np.linalg.svd(b, full_matrices=False)
    vt = vt[:k]
    vt = vt * component_signs(vt, np)[:, None]
    return s[:k], vt.astype(np.float32), x.total(_square_sum)
