"""gpuclust: cluster recommender-system users by what they do, on the GPU or the CPU."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Loaded on first use, so that `import gpuclust` (and the CLI's start) stays fast.
_LAZY = {"UserClusterer": "gpuclust.estimator", "PipelineConfig": "gpuclust.config"}

__all__ = ["PipelineConfig", "UserClusterer", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gpuclust' has no attribute {name!r}")
