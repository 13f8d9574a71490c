"""Weighted concatenation of feature blocks, each scaled to the same total variance first.

Without the scaling a 384-d text block would outvote a 15-d behaviour block by dimension count alone;
with it, a block's weight is its share of the geometry. The centring and scale learned at fit time are
reused for new users.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.errors import UsageError


class Fuser:
    """Centre each block, divide by the root of its total variance, multiply by sqrt(weight), concat."""

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = weights or {}

    def fit(self, blocks: dict[str, Any], xp) -> Fuser:
        if not blocks:
            raise UsageError("no feature blocks to fuse: select at least one feature")
        self.stats_, self.layout_, start = {}, {}, 0
        for name, block in blocks.items():
            weight = float(self.weights.get(name, 1.0))
            if weight < 0:
                raise UsageError(f"feature weight for {name!r} must be >= 0, got {weight}")
            mean = block.mean(axis=0)
            total = float(xp.sqrt(((block - mean).astype(xp.float64) ** 2).sum() / max(block.shape[0], 1)))
            self.stats_[name] = {"mean": mean.astype(xp.float32), "scale": total if total > 0 else 1.0,
                                 "weight": weight}
            self.layout_[name] = {"columns": [start, start + int(block.shape[1])], "weight": weight}
            start += int(block.shape[1])
        return self

    def transform(self, blocks: dict[str, Any], xp) -> Any:
        parts = []
        for name, s in self.stats_.items():
            _same_width(name, blocks[name], s["mean"])
            factor = np.float32(np.sqrt(s["weight"]) / s["scale"])
            parts.append((blocks[name] - s["mean"]) * factor)
        return xp.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def fit_transform(self, blocks: dict[str, Any], xp) -> Any:
        return self.fit(blocks, xp).transform(blocks, xp)


def _same_width(name: str, block: Any, mean: Any) -> None:
    """New users' block has the columns the fit's had: a featuriser whose transform returns another width
    would end in NumPy's broadcast error, naming no feature."""
    width, fitted = int(block.shape[1]), int(mean.shape[0])
    if width != fitted:
        raise UsageError(f"feature block {name!r} has {width} columns for these users, and had {fitted} at fit time: "
                         "a featuriser's transform must return the columns its fit_transform returned")
