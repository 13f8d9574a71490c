"""Randomized truncated SVD over sparse matrices, written once against xp/sparse.

cuML's TruncatedSVD takes dense input only, and densifying a users x items matrix does not fit, so
the GPU path uses sparse products (cupyx) exactly as the CPU path does with SciPy (Halko et al. 2011).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def randomized_svd(x: Any, k: int, xp, seed: int = 0, oversamples: int = 10, power_iterations: int = 4):
    """Return (U * S, S, Vt) for the top k singular triplets of a sparse or dense matrix `x`."""
    n, m = x.shape
    k = min(k, n, m)
    width = min(k + oversamples, n, m)
    rng = xp.random.default_rng(seed)
    omega = rng.standard_normal((m, width), dtype=xp.float32)
    q, _ = xp.linalg.qr(x @ omega)
    for _ in range(power_iterations):
        # Re-orthonormalise between products: without it the small singular values drown in round-off.
        z, _ = xp.linalg.qr(x.T @ q)
        q, _ = xp.linalg.qr(x @ z)
    b = xp.asarray((x.T @ q).T)
    ub, s, vt = xp.linalg.svd(b, full_matrices=False)
    u = q @ ub
    u, vt = _flip_signs(u[:, :k], vt[:k], xp)
    return u * s[:k], s[:k], vt


def _flip_signs(u, vt, xp):
    """Make each component's largest loading positive, so results do not flip between runs."""
    biggest = xp.argmax(xp.abs(vt), axis=1)
    signs = xp.sign(vt[xp.arange(vt.shape[0]), biggest])
    signs = xp.where(signs == 0, 1, signs).astype(vt.dtype)
    return u * signs, vt * signs[:, None]


def as_float32(x):
    return x.astype(np.float32, copy=False)
