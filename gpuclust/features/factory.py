"""One place that turns the feature settings into featurisers of the registry's names."""

from __future__ import annotations

import dataclasses
from typing import Any

from gpuclust import registry
from gpuclust.config import PipelineConfig


def weighted_features(config: PipelineConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the selected features to compute, {skipped name: why}). A block of weight 0 adds nothing to the
    fused geometry, so it is not computed: a learned one would otherwise train for nothing."""
    weights = config.features.weights
    kept = tuple(name for name in config.features.features if float(weights.get(name, 1.0)) > 0)
    skipped = {name: "weight 0: not computed" for name in config.features.features if name not in kept}
    return kept, skipped


def build_featurizer(name: str, config: PipelineConfig, embedding_model: Any = None, item_vectors: Any = None,
                     progress: Any = None) -> Any:
    """The featuriser `name`, configured from `config`; the text one may take a model object or
    precomputed item vectors instead of the model the config names. The learned ones report their
    training to `progress` (a callable taking one line of text)."""
    cls = registry.lookup(registry.FEATURES, name, "feature").load()
    features = config.features
    if name == "behaviour":
        return cls(features.normalise, config.preprocess.session_gap_minutes)
    if name == "tfidf":
        return cls(features.tfidf_vocabularies, features.tfidf_components, features.svd_oversamples,
                   features.svd_power_iterations, config.seed)
    if name == "text":
        options = dataclasses.asdict(features.text)
        if embedding_model is not None:
            options["model"] = embedding_model
        return cls(**options, seed=config.seed, item_vectors=item_vectors)
    if name == "sequence":
        options = dataclasses.asdict(features.sequence)
        text_vectors = None
        if features.sequence.item_init == "text":
            from gpuclust.features.learned.sequence import text_item_vectors

            text_vectors = text_item_vectors(features.text, config.seed, embedding_model, item_vectors)
        return cls(**options, seed=config.seed, progress=progress, text_vectors=text_vectors)
    if name == "autoencoder":
        return cls(**dataclasses.asdict(features.autoencoder), seed=config.seed, progress=progress)
    return cls()  # a featuriser registered by a user: configured by its own defaults
