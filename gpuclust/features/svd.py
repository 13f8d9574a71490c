"""Randomized truncated SVD over sparse matrices, written once against xp/sparse.

cuML's TruncatedSVD takes dense input only, and densifying a users x items matrix does not fit, so
the GPU path uses sparse products (cupyx) exactly as the CPU path does with SciPy (Halko et al. 2011).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.backend import map_tasks, one_thread_blas, row_shares


def randomized_svd(x: Any, k: int, xp, seed: int = 0, oversamples: int = 10, power_iterations: int = 4):
    """Return (U * S, S, Vt) for the top k singular triplets of a sparse or dense matrix `x`."""
    # Threaded OpenBLAS spends seconds in the transposed tall-skinny GEMMs and the small SVD here (2 s vs
    # 0.03 s for a 100k x 42 Gram on two cores); the row shares below are the threads instead.
    with one_thread_blas(xp):
        return _randomized_svd(x, k, xp, seed, oversamples, power_iterations)


def _randomized_svd(x: Any, k: int, xp, seed: int, oversamples: int, power_iterations: int):
    n, m = x.shape
    k = min(k, n, m)
    width = min(k + oversamples, n, m)
    rng = xp.random.default_rng(seed)
    omega = rng.standard_normal((m, width), dtype=xp.float32)
    products = ShardedProducts(x, xp)
    q = orthonormalise(products.times(omega), xp, products.rows)
    for _ in range(power_iterations):
        # Re-orthonormalise between products: without it the small singular values drown in round-off.
        z = orthonormalise(products.transposed_times(q), xp)
        q = orthonormalise(products.times(z), xp, products.rows)
    b = xp.asarray(products.transposed_times(q).T)
    ub, s, vt = xp.linalg.svd(b, full_matrices=False)
    u = q @ ub
    u, vt = _flip_signs(u[:, :k], vt[:k], xp)
    return u * s[:k], s[:k], vt


class RowShares:
    """A tall matrix's passes by shares of its rows, one per CPU thread (`backend.row_shares`): SciPy's
    sparse products and one-thread BLAS release the GIL, so a 1M-user TF-IDF sketch uses every core. On
    a GPU, one share. Sums over shares are taken in share order, so results do not depend on timing."""

    def __init__(self, n_rows: int, xp) -> None:
        self.xp = xp
        self.ranges = row_shares(n_rows, xp)

    def each(self, fn) -> list:
        """fn(share index, start, stop) for every share, in order."""
        return map_tasks(lambda i: fn(i, *self.ranges[i]), len(self.ranges), self.xp)

    def slices(self, x: Any) -> list:
        """x's rows by share: views of a CSR matrix's arrays, not copies (a 1M-user TF-IDF matrix is 320 MB)."""
        return [x] if len(self.ranges) == 1 else [_rows(x, a, b) for a, b in self.ranges]


def _rows(x: Any, start: int, stop: int) -> Any:
    if getattr(x, "format", None) != "csr":
        return x[start:stop]  # dense: a view already
    lo, hi = int(x.indptr[start]), int(x.indptr[stop])
    return type(x)((x.data[lo:hi], x.indices[lo:hi], x.indptr[start:stop + 1] - lo), shape=(stop - start, x.shape[1]))


class ShardedProducts:
    """x @ z and xᵀ @ q by `RowShares` of x (sliced once)."""

    def __init__(self, x: Any, xp) -> None:
        self.xp = xp
        self.rows = RowShares(x.shape[0], xp)
        self.blocks = self.rows.slices(x)

    def times(self, z: Any) -> Any:
        parts = self.rows.each(lambda i, a, b: self.blocks[i] @ z)
        return parts[0] if len(parts) == 1 else self.xp.concatenate(parts)

    def transposed_times(self, q: Any) -> Any:
        """xᵀ @ q for q with a row per row of x."""
        return sum_in_order(self.rows.each(lambda i, a, b: self.blocks[i].T @ q[a:b]))


def sum_in_order(parts: list) -> Any:
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out


ONE_PASS_CONDITION = 1e3  # one CholQR pass leaves q orthonormal to ~cond(y)² x 1e-16: 1e-10 here


def orthonormalise(y, xp, rows: RowShares | None = None):
    """Orthonormal basis of y's columns by Cholesky-QR in float64, returned in float32: a second pass
    (CholQR2) where y's condition number is over ONE_PASS_CONDITION, Householder QR where y is near
    rank-deficient (the Cholesky fails).

    A tall-skinny Householder QR is slow on the CPU (1.9 s for 100k x 42 on two cores); CholQR needs
    only a small Gram matrix. One pass loses orthogonality as cond(y)² x 1e-16 in float64, far below the
    float32 it is returned in at the conditions a power iteration's sketches have, so the second pass
    runs only where it matters. `rows` runs the tall products by row shares."""
    rows = rows or RowShares(y.shape[0], xp)
    q = rows.each(lambda i, a, b: y[a:b].astype(xp.float64))
    for second in (False, True):
        chol = cholesky_factor(_gram(q, rows), xp)
        if chol is None:
            return xp.linalg.qr(y.astype(xp.float64))[0].astype(xp.float32)
        q = _times(q, xp.linalg.inv(chol).T, rows)
        if not second:
            s = xp.linalg.svd(chol, compute_uv=False)
            if bool(s[0] <= ONE_PASS_CONDITION * s[-1]):
                break
    out = xp.empty(y.shape, dtype=xp.float32)  # filled by share: no float32 copies to concatenate

    def put(i: int, start: int, stop: int) -> None:
        out[start:stop] = q[i]

    rows.each(put)
    return out


def _gram(parts: list, rows: RowShares) -> Any:
    return sum_in_order(rows.each(lambda i, a, b: parts[i].T @ parts[i]))


def _times(parts: list, m: Any, rows: RowShares) -> list:
    return rows.each(lambda i, a, b: parts[i] @ m)


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
