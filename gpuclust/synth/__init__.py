"""Synthetic recommender logs with planted user groups (`gpuclust synth`)."""

from gpuclust.synth.generator import EVENT_TYPES, SynthData, SynthSpec, generate, write

__all__ = ["EVENT_TYPES", "SynthData", "SynthSpec", "generate", "write"]
