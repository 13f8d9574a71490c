"""Item popularity per cluster and overall: the table both the evaluation and a saved model's
recommendations are made of, counted one way."""

from __future__ import annotations

from typing import Any

# Blend weights of cluster popularity against global popularity tried when the weight is tuned.
GRID = tuple(round(0.1 * i, 1) for i in range(11))


def weighted_counts(users: Any, items: Any, weights: Any, clusters: Any, k: int, n_items: int, xp) -> Any:
    """(k + 1) x items summed event weights per cluster (`clusters[user]`, -1 = none), the last row over
    everyone (xp float64). Counts of disjoint sets of users add up."""
    c = clusters[users]
    inside = c >= 0
    flat = xp.bincount(c[inside] * n_items + items[inside], weights=weights[inside], minlength=k * n_items)
    table = xp.zeros((k + 1, n_items), dtype=xp.float64)
    table[:k] = flat[: k * n_items].reshape(k, n_items)
    table[k] = xp.bincount(items, weights=weights, minlength=n_items)[:n_items]
    return table


def shares(counts: Any, xp) -> Any:
    """Each row as shares of its total (float32); an empty row stays zeros."""
    totals = counts.sum(axis=1, keepdims=True)
    return xp.where(totals > 0, counts / xp.where(totals > 0, totals, 1.0), 0.0).astype(xp.float32)
