"""gpuclust: cluster recommender-system users by what they do, on the GPU or the CPU."""

from __future__ import annotations

__version__ = "0.1.0"

from gpuclust.config import PipelineConfig  # noqa: E402
from gpuclust.pipeline import Pipeline  # noqa: E402

__all__ = ["Pipeline", "PipelineConfig", "__version__"]
