"""Column normalisers for behaviour features, written once against `xp` (NumPy or CuPy)."""

from __future__ import annotations

from typing import Any

EPS = 1e-12


def signed_log1p(x, xp):
    return xp.sign(x) * xp.log1p(xp.abs(x))


def standardise(x, xp):
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True)
    return (x - mean) / xp.where(std > EPS, std, 1.0)


def min_max(x, xp):
    low = x.min(axis=0, keepdims=True)
    span = x.max(axis=0, keepdims=True) - low
    return (x - low) / xp.where(span > EPS, span, 1.0)


def quantile(x, xp):
    """Ranks scaled to [0, 1]: robust to the heavy tails of counts and money."""
    n = x.shape[0]
    ranks = xp.argsort(xp.argsort(x, axis=0), axis=0).astype(x.dtype)
    return ranks / max(n - 1, 1)


def normalise(x: Any, method: str, xp) -> Any:
    """`log1p` compresses heavy tails (counts, money) and then standardises."""
    if method == "none":
        return x
    if method == "standard":
        return standardise(x, xp)
    if method == "minmax":
        return min_max(x, xp)
    if method == "log1p":
        return standardise(signed_log1p(x, xp), xp)
    if method == "quantile":
        return quantile(x, xp)
    raise ValueError(f"unknown normaliser {method!r}")
