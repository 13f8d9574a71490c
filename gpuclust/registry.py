"""The one registry of names: features, clustering algorithms, reducers and normalisers, and the
engines each can run on.

Config validation, the CLI, saved models and the estimator all read it. It imports no stage: a class
is named by its import path and loaded on first use, so the layering stays one-way (stages may import
config and registry, never the reverse) and nothing imports in a circle.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from gpuclust.errors import UsageError

# A feature's name keys its stage, manifest entries and saved arrays ("featurizer.NAME.KEY") and is
# listed in --features "a,b": a dot or a comma would make one name read as two.
FEATURE_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Entry:
    """A named stage: where its class lives, the engines it runs on (besides "auto") and what it is."""

    name: str
    target: str  # "package.module:Class"
    summary: str
    engines: tuple[str, ...] = ()
    takes_k: bool = False  # told how many clusters to make (density algorithms find their own number)

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _table(*entries: Entry) -> dict[str, Entry]:
    return {e.name: e for e in entries}


FEATURES = _table(
    Entry("behaviour", "gpuclust.features.behaviour:BehaviourFeaturizer",
          "recency, frequency, money, event mix, activity span, sessions"),
    Entry("tfidf", "gpuclust.features.tfidf:TfidfFeaturizer",
          "TF-IDF of users over items and categories, reduced by a randomized SVD"),
    Entry("text", "gpuclust.features.text.featurizer:TextFeaturizer",
          "transformer embeddings of the items a user touched, pooled per user"),
    Entry("sequence", "gpuclust.features.learned.sequence:SequenceFeaturizer",
          "a GRU/LSTM/Transformer over each user's time-ordered events, trained on next-item prediction"),
    Entry("autoencoder", "gpuclust.features.learned.autoencoder:AutoencoderFeaturizer",
          "the bottleneck of a Mult-DAE/Mult-VAE trained on the sparse users x items matrix"),
)

ALGORITHMS = _table(
    Entry("kmeans", "gpuclust.cluster.kmeans:KMeans", "Lloyd's k-means",
          engines=("cuml", "torch", "faiss", "sklearn"), takes_k=True),
    Entry("dbscan", "gpuclust.cluster.density:DBSCAN", "density clusters within a radius; noise is -1",
          engines=("cuml", "sklearn")),
    Entry("hdbscan", "gpuclust.cluster.density:HDBSCAN", "density clusters that persist across radii; noise is -1",
          engines=("cuml", "sklearn")),
    Entry("agglomerative", "gpuclust.cluster.agglomerative:Agglomerative", "Ward merging, up to 30k users",
          engines=("sklearn",), takes_k=True),
    Entry("predictive", "gpuclust.cluster.predictive:PredictiveClusters",
          "k prototypes trained so that a user's cluster predicts their next items (cluster-bottleneck "
          "recommender), with a balance term", engines=("torch",), takes_k=True),
)

REDUCERS = _table(
    Entry("pca", "gpuclust.reduce.pca:PCA", "principal components", engines=("cuml", "torch", "sklearn")),
    Entry("umap", "gpuclust.reduce.umap:UMAP", "UMAP neighbourhood embedding", engines=("cuml", "umap-learn")),
)
NO_REDUCER = "none"

NORMALISERS = ("standard", "minmax", "log1p", "quantile", "none")
TFIDF_VOCABULARIES = ("item", "category")
DEVICES = ("auto", "cpu", "cuda")
SEQUENCE_CELLS = ("gru", "lstm", "transformer")
SEQUENCE_POOLINGS = ("last", "mean")
ITEM_INITS = ("random", "text")
AUTOENCODERS = ("dae", "vae")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
K_OBJECTIVES = ("separation", "recommend")
# The personal recommender of a fitted model (recommend.personal): auto = EASE while it fits memory, else kNN.
PERSONAL_MODELS = ("auto", "ease", "knn", "none")

# What `auto` takes, per kind of work and device, in order of preference: the first usable engine wins.
# On the GPU cuML is fastest; torch comes next on GPU machines without RAPIDS (data stay on the device
# through DLPack), then FAISS, whose k-means trains on host copies. On the CPU scikit-learn beat
# faiss.Kmeans on time and inertia (benchmarks/results/kmeans-cpu.md).
PREFERENCE: dict[str, dict[str, tuple[str, ...]]] = {
    "kmeans": {"cuda": ("cuml", "torch", "faiss", "sklearn"), "cpu": ("sklearn",)},
    "dbscan": {"cuda": ("cuml", "sklearn"), "cpu": ("sklearn",)},
    "hdbscan": {"cuda": ("cuml", "sklearn"), "cpu": ("sklearn",)},
    "agglomerative": {"cuda": ("sklearn",), "cpu": ("sklearn",)},
    "predictive": {"cuda": ("torch",), "cpu": ("torch",)},
    "pca": {"cuda": ("cuml", "torch"), "cpu": ("sklearn",)},
    "umap": {"cuda": ("cuml", "umap-learn"), "cpu": ("umap-learn",)},
}


def engines_of(kind: str) -> tuple[str, ...]:
    """Every engine name `kind` (an algorithm or a reducer) accepts, "auto" first."""
    entry = ALGORITHMS.get(kind) or REDUCERS.get(kind)
    if entry is None:
        raise KeyError(kind)
    return ("auto", *entry.engines)


def lookup(table: dict[str, Entry], name: str, what: str) -> Entry:
    """The entry called `name`, or a UsageError listing the valid names."""
    if name not in table:
        raise UsageError(f"unknown {what} {name!r}: choose one of {', '.join(table)}")
    return table[name]


def register_feature(name: str, target: str, summary: str = "") -> None:
    """Make a featuriser class (given as "module:Class") known by name to config, CLI and saved models."""
    if not (isinstance(name, str) and FEATURE_NAME.fullmatch(name)):
        raise UsageError(f"feature name {name!r} is not one: give letters, digits, '_' or '-', e.g. 'my_feature'")
    FEATURES[name] = Entry(name, target, summary or target)
