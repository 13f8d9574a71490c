"""Weighted concatenation of feature blocks, each scaled to the same total variance first.

Without the scaling a 384-d text block would outvote a 15-d behaviour block by dimension count alone;
with it, a block's weight is its share of the geometry.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust.errors import UsageError


def block_scale(x, xp):
    """Centre and divide by the root of the total variance, so the block's variance sums to 1."""
    x = x - x.mean(axis=0, keepdims=True)
    total = float(xp.sqrt((x.astype(xp.float64) ** 2).sum() / max(x.shape[0], 1)))
    return x / total if total > 0 else x


def fuse(blocks: dict[str, Any], weights: dict[str, float], xp) -> tuple[Any, dict[str, dict]]:
    """Return the fused matrix and, per block, its column span and weight (for the manifest)."""
    if not blocks:
        raise UsageError("no feature blocks to fuse: select at least one feature")
    parts, layout, start = [], {}, 0
    for name, block in blocks.items():
        weight = float(weights.get(name, 1.0))
        if weight < 0:
            raise UsageError(f"feature weight for {name!r} must be >= 0, got {weight}")
        parts.append(block_scale(block, xp) * np.float32(np.sqrt(weight)))
        layout[name] = {"columns": [start, start + int(block.shape[1])], "weight": weight}
        start += int(block.shape[1])
    return xp.concatenate(parts, axis=1).astype(np.float32, copy=False), layout
