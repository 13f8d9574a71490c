"""Run configuration: plain dataclasses, loadable from TOML, recorded whole in the manifest."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuclust import schema
from gpuclust.cluster.factory import ALGORITHMS
from gpuclust.cluster.kmeans import ENGINES
from gpuclust.errors import UsageError, require_file
from gpuclust.features.normalise import METHODS as NORMALISERS
from gpuclust.reduce import REDUCERS

FEATURES = ("behaviour", "tfidf", "text")
MAX_SEED = 2**32 - 1  # what NumPy and scikit-learn accept (FAISS gets it folded into 31 bits)


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
        _check_types(self, "")
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed must be between 0 and {MAX_SEED} (2**32-1), got {self.seed}")
        _distinct_columns(self.columns)
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
        _check_weights("event weight", self.preprocess.event_weights, None, "--event-weights view=1,purchase=5")
        _check_weights("feature weight", self.features.weights, FEATURES, "--feature-weights tfidf=1,behaviour=0.25")
        if not any(self.features.weights.get(name, 1.0) > 0 for name in self.features.features):
            raise UsageError("every selected feature has weight 0: give at least one a positive --feature-weights")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        return _build(cls, data, "config")

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        path = Path(path)
        require_file(path, "a TOML config file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise UsageError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
                             f"{exc.start}); save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data)


def _build(cls, data: Any, where: str):
    """A config dataclass from a TOML/JSON table, every value checked against the field's annotation."""
    if not isinstance(data, dict):
        raise UsageError(f"[{where}] must be a table of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise UsageError(f"unknown key(s) {', '.join(unknown)} in [{where}]; valid keys: {', '.join(hints)}")
    values = {}
    for name, value in data.items():
        key = name if where == "config" else f"{where}.{name}"
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], value, key)
        else:
            values[name] = _typed(key, value, hints[name])
    return cls(**values)


def _check_types(config: Any, where: str) -> None:
    """Every field of a (nested) config against its annotation: Python lets `k = "8"` or `k = True` in."""
    for name, hint in typing.get_type_hints(type(config)).items():
        key = f"{where}{name}"
        value = getattr(config, name)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise UsageError(f"config value {key} = {value!r} has the wrong type: expected a {hint.__name__}")
            _check_types(value, f"{key}.")
        else:
            _typed(key, value, hint)


def _typed(key: str, value: Any, hint: Any) -> Any:
    """`value` in the form the field keeps (lists as tuples, whole numbers as floats where floats are
    wanted), or a UsageError naming the key, the value and the type expected."""
    if not _fits(value, hint):
        raise UsageError(f"config value {key} = {value!r} has the wrong type: expected {_describe(hint)}")
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    if hint is float:
        return float(value)
    return value


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # bool is an int to Python, never to a config
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    raise TypeError(f"config annotation {hint!r} has no check")  # a new kind of field: teach _fits about it


_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings")}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # `int | None`: None is the default, not something to write
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is tuple:
        return f"a list of {_NAMES[args[0]][1]}"
    if origin is dict:
        return "a table" if args[1] is Any else f"a table of name = {_NAMES[args[1]][0].split()[-1]} pairs"
    return _NAMES[hint][0]


def _distinct_columns(columns: ColumnMap) -> None:
    """One file column, one role: `--time-col value` would read the money column as time and as money."""
    for roles in (("user_id", "item_id", "event_type", "timestamp", "value"), ("item_item_id", "category", "price")):
        seen: dict[str, str] = {}
        for role in roles:
            source = getattr(columns, role)
            if source in seen:
                raise UsageError(f"column {source!r} is mapped to both {seen[source]} and {role}; give each role its "
                                 "own column (--user-col, --item-col, --event-col, --time-col, --value-col, "
                                 "--item-key-col, --category-col)")
            seen[source] = role


def _check_weights(what: str, weights: dict[str, float], valid: tuple[str, ...] | None, example: str) -> None:
    """Weights are finite and >= 0, at least one is positive, and (where `valid` is given) each names a
    known thing: a typo such as `behavior=1` would otherwise be silently ignored."""
    for name, weight in weights.items():
        if valid is not None and name not in valid:
            raise UsageError(f"unknown name {name!r} for a {what}: choose from {', '.join(valid)}")
        if not math.isfinite(weight) or weight < 0:
            raise UsageError(f"{what} {name}={weight} must be a finite number >= 0")
    if not any(w > 0 for w in weights.values()):
        raise UsageError(f"no {what} is positive ({weights or 'none given'}); give at least one, e.g. {example}")


def _one_of(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UsageError(f"unknown {what} {value!r}: choose one of {', '.join(valid)}")


def _at_least(what: str, value: int, low: int) -> None:
    if value is None or value < low:
        raise UsageError(f"{what} must be at least {low}, got {value}")
