"""Randomized truncated SVD over sparse matrices, written once against xp/sparse.

cuML's TruncatedSVD takes dense input only, and densifying a users x items matrix does not fit, so
the GPU path uses sparse products (cupyx) exactly as the CPU path does with SciPy (Halko et al. 2011).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def randomized_svd(x: Any, k: int, xp, seed: int = 0, oversamples: int = 10, power_iterations: int = 4):
    """Return (U * S, S, Vt) for the top k singular triplets of a sparse or dense matrix `x`."""
    if xp.__name__ == "numpy":
        # Threaded OpenBLAS spends seconds in the transposed tall-skinny GEMMs and the small SVD here
        # (2 s vs 0.03 s for a 100k x 42 Gram on two cores); the sparse products are single-threaded
        # SciPy anyway, so one BLAS thread loses nothing.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return _randomized_svd(x, k, xp, seed, oversamples, power_iterations)
    return _randomized_svd(x, k, xp, seed, oversamples, power_iterations)


def _randomized_svd(x: Any, k: int, xp, seed: int, oversamples: int, power_iterations: int):
    n, m = x.shape
    k = min(k, n, m)
    width = min(k + oversamples, n, m)
    rng = xp.random.default_rng(seed)
    omega = rng.standard_normal((m, width), dtype=xp.float32)
    q = orthonormalise(x @ omega, xp)
    for _ in range(power_iterations):
        # Re-orthonormalise between products: without it the small singular values drown in round-off.
        z = orthonormalise(x.T @ q, xp)
        q = orthonormalise(x @ z, xp)
    b = xp.asarray((x.T @ q).T)
    ub, s, vt = xp.linalg.svd(b, full_matrices=False)
    u = q @ ub
    u, vt = _flip_signs(u[:, :k], vt[:k], xp)
    return u * s[:k], s[:k], vt


def orthonormalise(y, xp):
    """Orthonormal basis of y's columns by Cholesky-QR, twice (CholQR2), in float64.

    A tall-skinny Householder QR is slow on the CPU (1.9 s for 100k x 42 on two cores); CholQR2 needs
    only a small Gram matrix, is as accurate while y is not near rank-deficient, and falls back to QR
    if it is.
    """
    q = y.astype(xp.float64)
    for _ in range(2):
        chol = cholesky_factor(q.T @ q, xp)
        if chol is None:
            return xp.linalg.qr(y.astype(xp.float64))[0].astype(xp.float32)
        q = q @ xp.linalg.inv(chol).T
    return q.astype(xp.float32)


def cholesky_factor(gram, xp, rtol: float = 1e-8):
    """Lower Cholesky factor of a symmetric `gram`, or None where it is not positive definite.

    NumPy raises on a failed pivot; CuPy (cuSOLVER potrf) does not unless `cupyx.errstate(linalg=...)`
    asks, and returns a partial factor. So the factor is checked the same way on both: finite, a
    positive diagonal, and L @ L.T giving back `gram` (which a partial factor does not).
    """
    try:
        chol = xp.linalg.cholesky(gram)
    except np.linalg.LinAlgError:  # CuPy raises NumPy's LinAlgError too, where it checks
        return None
    sound = xp.isfinite(chol).all() & (xp.diagonal(chol) > 0).all()
    if not bool(sound):
        return None
    residual = xp.abs(chol @ chol.T - gram).max()
    return chol if bool(residual <= rtol * xp.abs(gram).max()) else None


def _flip_signs(u, vt, xp):
    """Make each component's largest loading positive, so results do not flip between runs."""
    signs = component_signs(vt, xp)
    return u * signs, vt * signs[:, None]


def component_signs(vt, xp):
    """+1 or -1 per row of `vt`: the sign of its largest loading (the Dask block SVD flips by it too)."""
    biggest = xp.argmax(xp.abs(vt), axis=1)
    signs = xp.sign(vt[xp.arange(vt.shape[0]), biggest])
    return xp.where(signs == 0, 1, signs).astype(vt.dtype)
