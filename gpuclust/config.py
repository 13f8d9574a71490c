"""Run configuration: plain dataclasses, loadable from TOML, recorded whole in the manifest."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuclust import schema
from gpuclust.cluster.factory import ALGORITHMS
from gpuclust.cluster.kmeans import ENGINES
from gpuclust.errors import UsageError
from gpuclust.features.normalise import METHODS as NORMALISERS
from gpuclust.reduce import REDUCERS

FEATURES = ("behaviour", "tfidf", "text")



@dataclass
class ColumnMap:
    """Names in the input files for each canonical column (`schema`)."""

    user_id: str = schema.USER
    item_id: str = schema.ITEM
    event_type: str = schema.EVENT
    timestamp: str = schema.TIME
    value: str = schema.VALUE
    item_item_id: str = schema.ITEM
    category: str = schema.CATEGORY
    price: str = schema.PRICE
    text: tuple[str, ...] = (schema.TITLE,)


@dataclass
class PreprocessConfig:
    event_weights: dict[str, float] = field(default_factory=lambda: dict(schema.DEFAULT_EVENT_WEIGHTS))
    min_user_events: int = 1
    min_item_events: int = 1
    drop_duplicates: bool = True
    max_bad_timestamp_share: float = 0.01
    sample_users: int | None = None
    sample_replace: bool = False
    session_gap_minutes: float = 30.0


@dataclass
class FeatureConfig:
    features: tuple[str, ...] = ("behaviour", "tfidf")
    normalise: str = "log1p"
    tfidf_components: int = 32
    tfidf_vocabularies: tuple[str, ...] = ("item", "category")
    svd_oversamples: int = 10
    svd_power_iterations: int = 4
    # Behaviour statistics are few but noisy (recency, span): at equal weight they blur the groups that
    # what users touch reveals. 0.25 is what planted-group recovery on synthetic data supports.
    weights: dict[str, float] = field(default_factory=lambda: {"behaviour": 0.25, "tfidf": 1.0, "text": 1.0})
    # Options passed to the text featuriser (model, mode, template, precision, ...).
    text: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterConfig:
    algorithm: str = "kmeans"
    k: int = 8
    # Non-empty: sweep these k values and keep the best by the rule in gpuclust.cluster.sweep.
    k_values: tuple[int, ...] = ()
    engine: str = "auto"
    n_init: int = 3
    max_iter: int = 100
    tol: float = 1e-4
    eps: float = 0.5
    min_samples: int | None = None
    min_cluster_size: int = 5


@dataclass
class ReduceConfig:
    method: str = "none"
    n_components: int = 16
    n_neighbors: int = 15
    min_dist: float = 0.1


@dataclass
class AssessConfig:
    silhouette_sample: int = 20_000
    top_n: int = 5
    map_sample: int = 20_000
    anomalies: int = 20


@dataclass
class PipelineConfig:
    device: str = "auto"
    seed: int = 0
    columns: ColumnMap = field(default_factory=ColumnMap)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    assess: AssessConfig = field(default_factory=AssessConfig)

    def validate(self) -> PipelineConfig:
        """Reject impossible values up front, naming the value and the valid ones."""
        _one_of("device", self.device, ("auto", "cpu", "cuda"))
        _one_of("normalise", self.features.normalise, NORMALISERS)
        _one_of("engine", self.cluster.engine, ENGINES)
        _one_of("algorithm", self.cluster.algorithm, ALGORITHMS)
        _one_of("reducer", self.reduce.method, REDUCERS)
        _at_least("reduce n_components", self.reduce.n_components, 1)
        _at_least("anomalies", self.assess.anomalies, 0)
        for k in self.cluster.k_values:
            _at_least("k in k_values", k, 2)
        for name in self.features.features:
            _one_of("feature", name, FEATURES)
        for vocab in self.features.tfidf_vocabularies:
            _one_of("tfidf vocabulary", vocab, ("item", "category"))
        if not self.features.features:
            raise UsageError("no features selected: pass --features with one or more of " + ", ".join(FEATURES))
        _at_least("k", self.cluster.k, 1)
        _at_least("n_init", self.cluster.n_init, 1)
        _at_least("max_iter", self.cluster.max_iter, 1)
        _at_least("tfidf_components", self.features.tfidf_components, 1)
        _at_least("min_user_events", self.preprocess.min_user_events, 1)
        _at_least("min_item_events", self.preprocess.min_item_events, 1)
        _at_least("silhouette_sample", self.assess.silhouette_sample, 2)
        if self.preprocess.sample_users is not None:
            _at_least("sample_users", self.preprocess.sample_users, 1)
        if not 0 <= self.preprocess.max_bad_timestamp_share <= 1:
            raise UsageError("max_bad_timestamp_share must be between 0 and 1")
        if not self.preprocess.event_weights:
            raise UsageError("event_weights is empty: give at least one event type and its weight")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        return _build(cls, data, "config")

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data)


def _build(cls, data: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in [{where}]; valid keys: {', '.join(known)}")
    values = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, name)
        elif isinstance(default, tuple):
            values[name] = tuple(value) if isinstance(value, list | tuple) else (value,)
        else:
            values[name] = value
    return cls(**values)


def _one_of(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UsageError(f"unknown {what} {value!r}: choose one of {', '.join(valid)}")


def _at_least(what: str, value: int, low: int) -> None:
    if value is None or value < low:
        raise UsageError(f"{what} must be at least {low}, got {value}")
