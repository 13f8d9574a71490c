"""Run configuration: typed dataclasses, loadable from TOML, validated in one place before any data is
read, and recorded whole in the manifest.

Names (features, algorithms and their engines, reducers, normalisers) come from `gpuclust.registry`;
this module imports no stage. Messages name the setting the way the user gave it: the CLI flag and
the TOML key (`FLAGS`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuclust import registry, schema
from gpuclust.errors import UsageError, require_file

MAX_LEARNED_DIM = 4096  # embedding, hidden and bottleneck sizes of the learned featurisers
MAX_SEQUENCE_LAYERS = 16
MAX_EPOCHS = 10_000  # training epochs of any kind (the defaults are 40, 150 and 200)
MAX_TRANSFORMER_LENGTH = 2048
TRANSFORMER_HEAD_DIM = 32  # gpuclust.features.learned.sequence.HEAD_DIM (heads = dim // 32)
MAX_BALANCE = 1e6  # --balance, autoencoder.beta: far beyond any useful weight, far below float32 overflow
MAX_SEED = 2**32 - 1  # what NumPy and scikit-learn accept (FAISS gets it folded into 31 bits)
# EASE's λ is added to a float32 Gram: 1e39 is inf there and the weights NaN. 1e12 is far beyond any count
# a Gram holds (above it every score is 0) and far below float32 overflow.
MAX_EASE_LAMBDA = 1e12


MAX_SESSION_GAP_MINUTES = 525_600  # a year: beyond it every user has one session, whatever the log
MAX_MIN_EVENTS = 2**31 - 1  # a minimum count no user or item can reach is a typo, not a filter
# Counts that are loops with no early stop: 10**9 k-means restarts or SVD power iterations never end. The
# defaults are 3 (CPU) or 10 (GPU) restarts and 4 iterations; beyond these bounds nothing changes but time.
MAX_KMEANS_RESTARTS = 1000
MAX_POWER_ITERATIONS = 100
# Dask (`--scheduler`). Below MIN_WORKER_MEMORY a worker cannot hold Python, pandas and one partition: Dask
# pauses it for ever and the run hangs. Beyond MAX_WORKERS_PER_CORE local worker processes per core they
# only fight over the cores (64 on 2 cores hang while starting). Each partition is a task in every stage:
# beyond MAX_PARTITIONS_PER_THREAD per worker thread they are overhead (measured on 2 threads, 356k events:
# 5 partitions 30 s, 64 44 s, 512 over 150 s; 100,000 never started), and MAX_PARTITIONS caps any cluster.
MIN_WORKER_MEMORY = 256 * 2**20
MAX_WORKERS_PER_CORE = 4
MAX_PARTITIONS = 4096
MAX_PARTITIONS_PER_THREAD = 32
SCHEDULER_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")  # what distributed.comm speaks between machines

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

    def for_placing(self) -> PreprocessConfig:
        """These settings as every surface that places users with a fitted model applies them (predict,
        assign on one process or Dask, the service): the minimum counts and sampling shaped what the
        model learned from, so they are off; a user asked about is placed by any event the model can read."""
        return dataclasses.replace(self, min_user_events=1, min_item_events=1, sample_users=None)


@dataclass
class TextConfig:
    """The text featuriser: which encoder, how item texts are built, and how users are pooled."""

    model: str = "default"  # the offline all-MiniLM-L6-v2 package, a Hugging Face id or a local folder
    mode: str = "item"  # item: encode items once, pool per user; user: one text per user (slower)
    template: str | None = None  # e.g. "{title} | {category}"; default joins the text columns and category
    pooling: str = "mean"
    precision: str = "auto"
    half_life_days: float | None = None
    batch_tokens: int | None = None
    max_length: int = 128
    cache_dir: str | None = None
    allow_download: bool = False


@dataclass
class SequenceConfig:
    """The sequence featuriser: an encoder over each user's time-ordered events, trained on next-item
    prediction. None means "sized from the data" (see gpuclust.features.learned.defaults)."""

    cell: str = "gru"  # gru | lstm | transformer (a small causal, SASRec-style one)
    pooling: str = "last"  # last: the state after the last event; mean: the mean of the states
    dim: int | None = None  # item embedding and hidden size
    layers: int = 1
    max_length: int = 200  # the last events of each user that are kept
    epochs: int | None = None  # at most; early stopping on the held-out slice usually ends sooner
    batch_tokens: int | None = None  # events per batch (padded); None: by device
    learning_rate: float | None = None  # None: 0.005 for RNNs, 0.002 for the Transformer
    horizon: int = 1  # 1: the next event; H > 1: a random one of the next H events (longer-term interests)
    dropout: float = 0.1
    negatives: int | None = None  # sampled-softmax negatives; None: full softmax up to FULL_SOFTMAX_ITEMS
    item_init: str = "random"  # random | text: item embeddings from the text encoder's item vectors
    validation_share: float = 0.1  # users whose last event is held out for early stopping
    patience: int = 3
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on the CPU), fp32, bf16, fp16


@dataclass
class AutoencoderConfig:
    """The autoencoder featuriser: Mult-DAE / Mult-VAE over the sparse users x items matrix."""

    kind: str = "dae"  # dae (denoising) | vae (variational)
    dim: int | None = None  # bottleneck: the user vector
    hidden: int | None = None
    epochs: int | None = None
    batch_users: int | None = None
    learning_rate: float = 0.001
    dropout: float = 0.5  # input dropout (the denoising)
    beta: float = 0.2  # VAE: the KL weight reached by annealing
    negatives: int | None = None  # sampled-softmax negatives; None: full softmax up to FULL_SOFTMAX_ITEMS
    validation_share: float = 0.1  # users with a fifth of their items held out for early stopping
    patience: int = 3
    precision: str = "auto"


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
    weights: dict[str, float] = field(default_factory=lambda: {"behaviour": 0.25, "tfidf": 1.0, "text": 1.0,
                                                                "sequence": 1.0, "autoencoder": 1.0})
    text: TextConfig = field(default_factory=TextConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)


@dataclass
class ClusterConfig:
    algorithm: str = "kmeans"
    k: int = 8
    # Non-empty: sweep these k values and keep the best by the rule in gpuclust.cluster.sweep.
    k_values: tuple[int, ...] = ()
    # Set by --k auto (n_clusters="auto"): the range is gpuclust's to choose. For the recommend objective it
    # grows with the users (`cluster.sweep.auto_k_values`); a TOML's own k_values are kept as given.
    k_auto: bool = False
    engine: str = "auto"
    # k-means restarts; None: per engine (`cluster.kmeans.restarts`): 3 on the CPU, 10 on a GPU, where they
    # are nearly free and lift the GPU engines' ARI to the CPU's.
    n_init: int | None = None
    max_iter: int = 100
    tol: float = 1e-4
    eps: float = 0.5
    min_samples: int | None = None
    min_cluster_size: int = 5
    # How --k auto chooses: separation (silhouette rule) or recommend (validation HR@10 of cluster
    # popularity on a leave-last-out holdout of the data being fitted).
    objective: str = "separation"
    # --algorithm predictive: prototypes trained so that a user's cluster predicts their next items.
    balance: float = 1.0  # weight of the term that keeps clusters from collapsing
    epochs: int = 200


@dataclass
class ReduceConfig:
    method: str = "none"
    engine: str = "auto"
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
class DaskConfig:
    """Where a fit runs: None (this process), "local" (a LocalCluster started for the run; a LocalCUDACluster
    on a GPU machine) or a running scheduler's address (tcp://host:8786). The sizes apply to "local";
    None means: from the machine (gpuclust.distributed.cluster.local_defaults)."""

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = None  # per worker: "4GiB", "4GB", a byte count, or "auto"
    partitions: int | None = None  # user partitions after the shuffle; None: from the data size


@dataclass
class RecommendConfig:
    """Segment recommendations a saved model can serve: cluster popularity blended with global popularity."""

    # None: tuned at fit time on the held-out last item of a sample of users (see recommend.segments);
    # a number in 0..1 (e.g. what `gpuclust evaluate` chose) is used as given.
    blend_weight: float | None = None
    tune_users: int = 1000
    # The personal model (recommend.personal): auto (EASE while it fits memory_gib, item-kNN beyond; both
    # compete on the inner split), ease, knn, or none (segment lists only).
    personal: str = "auto"
    lambdas: tuple[float, ...] = (30.0, 100.0, 300.0, 1000.0)  # EASE λ grid, chosen on the inner split
    neighbours: tuple[int, ...] = (10, 20, 50)  # item-kNN neighbourhood sizes, chosen the same way
    memory_gib: float = 8.0  # EASE holds 4 x items² x 4 bytes: 8 GiB allows 23,170 items
    # Users with fewer distinct known items get their segment's list. 1: on Online Retail EASE beat the
    # segment lists at every history length, one item included (benchmarks/results/recommend-cpu.md), so
    # the segment list is for users with no known item and for models without a personal part.
    min_items: int = 1
    tune_personal_users: int = 10000  # held-out users scored per contender on the inner split


@dataclass
class PrivacyConfig:
    """Applies when user ids are pseudonymised (a key is given to the estimator or `--pseudonymise`)."""

    min_group_size: int = 10  # cluster figures from fewer users are withheld


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
    dask: DaskConfig = field(default_factory=DaskConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        """A section given as a dict (`PipelineConfig(columns=dict(user_id="customer"))`) is read as its TOML
        table would be: checked key by key and turned into its dataclass."""
        for name, hint in typing.get_type_hints(type(self)).items():
            value = getattr(self, name)
            if dataclasses.is_dataclass(hint) and isinstance(value, dict):
                setattr(self, name, _build(hint, value, name))

    def validate(self, require_features: bool = True, given: frozenset[str] = frozenset()) -> PipelineConfig:
        """Reject impossible or contradictory values up front, naming the setting and the valid values.

        `require_features=False` lets the named feature list be empty (featuriser objects stand in);
        `given` names settings the user set explicitly (CLI flags), which count as set even at their
        default value when the check for settings without effect runs."""
        _check_types(self, "")
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"{flag('seed')} must be between 0 and {MAX_SEED} (2**32-1), got {self.seed}")
        _distinct_columns(self.columns)
        _one_of("device", self.device, registry.DEVICES)
        _one_of("features.normalise", self.features.normalise, registry.NORMALISERS)
        _one_of("cluster.algorithm", self.cluster.algorithm, tuple(registry.ALGORITHMS))
        _one_of("cluster.engine", self.cluster.engine, registry.engines_of(self.cluster.algorithm),
                f" (the engines of {self.cluster.algorithm})")
        _one_of("reduce.method", self.reduce.method, (registry.NO_REDUCER, *registry.REDUCERS))
        if self.reduce.method != registry.NO_REDUCER:
            _one_of("reduce.engine", self.reduce.engine, registry.engines_of(self.reduce.method),
                    f" (the engines of {self.reduce.method})")
        if require_features and not self.features.features:
            raise UsageError(f"no features selected: pass {flag('features.features')} with one or more of "
                             + ", ".join(registry.FEATURES))
        for name in self.features.features:
            _one_of("features.features", name, tuple(registry.FEATURES))
        twice = sorted({name for name in self.features.features if self.features.features.count(name) > 1})
        if twice:
            raise UsageError(f"{flag('features.features')} names {', '.join(twice)} twice; give each feature once")
        for vocab in self.features.tfidf_vocabularies:
            _one_of("features.tfidf_vocabularies", vocab, registry.TFIDF_VOCABULARIES)
        for k in self.cluster.k_values:
            _at_least("cluster.k", k, 2)
        for path, low in (("reduce.n_components", 1), ("assess.anomalies", 0), ("cluster.k", 1),
                          ("cluster.max_iter", 1), ("features.tfidf_components", 1),
                          ("preprocess.min_user_events", 1), ("preprocess.min_item_events", 1),
                          ("assess.silhouette_sample", 2), ("features.text.max_length", 1),
                          ("recommend.tune_users", 1), ("privacy.min_group_size", 1),
                          ("features.svd_oversamples", 0), ("features.svd_power_iterations", 0),
                          ("assess.top_n", 1), ("assess.map_sample", 1)):
            _at_least(path, _get(self, path), low)
        if self.cluster.n_init is not None:
            _at_least("cluster.n_init", self.cluster.n_init, 1)
        for path, most in (("cluster.n_init", MAX_KMEANS_RESTARTS),
                           ("features.svd_power_iterations", MAX_POWER_ITERATIONS)):
            if (_get(self, path) or 0) > most:
                raise UsageError(f"{flag(path)} must be at most {most:,}, got {_get(self, path):,}")
        if self.features.text.batch_tokens is not None:
            _at_least("features.text.batch_tokens", self.features.text.batch_tokens, 1)
        if not 0 < self.preprocess.session_gap_minutes <= MAX_SESSION_GAP_MINUTES:
            raise UsageError(f"{flag('preprocess.session_gap_minutes')} must be above 0 and at most "
                             f"{MAX_SESSION_GAP_MINUTES:,} minutes (a year), got {self.preprocess.session_gap_minutes}")
        for path in ("preprocess.min_user_events", "preprocess.min_item_events"):
            if _get(self, path) > MAX_MIN_EVENTS:
                raise UsageError(f"{flag(path)} must be at most {MAX_MIN_EVENTS:,} events, got {_get(self, path)}")
        if not self.cluster.tol >= 0:
            raise UsageError(f"{flag('cluster.tol')} must be at least 0, got {self.cluster.tol}")
        if self.preprocess.sample_users is not None:
            _at_least("preprocess.sample_users", self.preprocess.sample_users, 1)
        _check_learned(self.features.sequence, self.features.autoencoder)
        _one_of("cluster.objective", self.cluster.objective, registry.K_OBJECTIVES)
        _in_range("cluster.balance", self.cluster.balance, 0.0, MAX_BALANCE)
        _at_least("cluster.epochs", self.cluster.epochs, 1)
        if self.cluster.epochs > MAX_EPOCHS:  # predictive training has no early stop: 10**9 epochs never end
            raise UsageError(f"{flag('cluster.epochs')} must be at most {MAX_EPOCHS}, got {self.cluster.epochs}; "
                             "e.g. epochs = 200")
        _check_dask(self.dask)
        if self.dask.scheduler is not None:
            _check_scheduler(self)
        _check_recommend(self.recommend)
        weight = self.recommend.blend_weight
        if weight is not None and not 0 <= weight <= 1:
            raise UsageError(f"{flag('recommend.blend_weight')} must be between 0 and 1, got {weight}")
        if not 0 <= self.preprocess.max_bad_timestamp_share <= 1:
            raise UsageError("preprocess.max_bad_timestamp_share must be between 0 and 1")
        check_weights("event weight", self.preprocess.event_weights, None, "--event-weights view=1,purchase=5")
        self.preprocess.event_weights = _event_type_keys(self.preprocess.event_weights)
        check_weights("feature weight", self.features.weights, tuple(registry.FEATURES),
                       "--feature-weights tfidf=1,behaviour=0.25", most=MAX_FEATURE_WEIGHT)
        if self.features.features and not any(self.features.weights.get(name, 1.0) > 0
                                              for name in self.features.features):
            raise UsageError("every selected feature has weight 0: give at least one a positive --feature-weights")
        _no_dead_settings(self, given)
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
        raise UsageError(f"config value {where} = {data!r} has the wrong type: expected a table of settings")
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
            setattr(config, name, _typed(key, value, hint))


def _typed(key: str, value: Any, hint: Any) -> Any:
    """`value` in the form the field keeps (lists as tuples, whole numbers as floats where floats are
    wanted, NumPy scalars as Python numbers), or a UsageError naming the key, the value and the type expected."""
    if not _fits(value, hint):
        raise UsageError(f"config value {key} = {value!r} has the wrong type: expected {_describe(hint)}")
    value = _plain(value)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    if hint is float:
        return float(value)
    return value


def _plain(value: Any) -> Any:
    """NumPy numbers (a seed from `rng.integers`, a k from `np.arange`) as the Python numbers they are:
    the config is written to JSON and TOML, which know no np.int64."""
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
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
    if hint is int:  # bool is an int to Python, never to a config; np.int64 is a whole number
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
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


MAX_FEATURE_WEIGHT = 1e6  # a block's share of the geometry; sqrt(weight) scales its float32 columns


def _event_type_keys(weights: dict[str, float]) -> dict[str, float]:
    """Event weights keyed as the log's event types are read (trimmed, lower case: 'Purchase ' is
    'purchase'): `Purchase=5` named a type no row could have, and every purchase dropped as unweighted.
    Two keys that name one type are refused, since either weight would be a guess."""
    keyed: dict[str, float] = {}
    given: dict[str, str] = {}
    for name, weight in weights.items():
        key = str(name).strip().lower()
        if key in keyed:
            raise UsageError(f"event weights {given[key]!r} and {name!r} name one event type, {key!r} (event types "
                             "are read trimmed and in lower case); give it one weight")
        keyed[key], given[key] = weight, str(name)
    return keyed


def check_weights(what: str, weights: dict[str, float], valid: tuple[str, ...] | None, example: str,
                  most: float = math.inf) -> None:
    """Weights are finite, >= 0 and at most `most`, at least one is positive, and (where `valid` is given)
    each names a known thing: a typo such as `behavior=1` would otherwise be silently ignored."""
    for name, weight in weights.items():
        if valid is not None and name not in valid:
            raise UsageError(f"unknown name {name!r} for a {what}: choose from {', '.join(valid)}")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise UsageError(f"{what} {name}={weight} must be a finite number >= 0")
        if weight > most:
            raise UsageError(f"{what} {name}={weight:g} is over {most:g}: weights are relative shares, so give the "
                             f"others less instead (e.g. {example})")
    if not any(w > 0 for w in weights.values()):
        raise UsageError(f"no {what} is positive ({weights or 'none given'}); give at least one, e.g. {example}")


# How the user names each setting on the command line; the TOML key is the path itself.
FLAGS = {
    "seed": "--seed", "device": "--device",
    "columns.user_id": "--user-col", "columns.item_id": "--item-col", "columns.event_type": "--event-col",
    "columns.timestamp": "--time-col", "columns.value": "--value-col", "columns.item_item_id": "--item-key-col",
    "columns.category": "--category-col", "columns.text": "--text-cols",
    "preprocess.event_weights": "--event-weights", "preprocess.min_user_events": "--min-user-events",
    "preprocess.min_item_events": "--min-item-events", "preprocess.sample_users": "--sample-users",
    "preprocess.sample_replace": "--sample-replace",
    "features.features": "--features", "features.normalise": "--normalise",
    "features.tfidf_components": "--tfidf-components", "features.weights": "--feature-weights",
    "features.text.model": "--model", "features.text.mode": "--text-mode", "features.text.template": "--text-template",
    "features.text.precision": "--precision", "features.text.half_life_days": "--half-life-days",
    "reduce.method": "--reduce", "reduce.engine": "--reduce-engine", "reduce.n_components": "--reduce-components",
    "cluster.algorithm": "--algorithm", "cluster.k": "--k", "cluster.engine": "--engine", "cluster.eps": "--eps",
    "cluster.min_samples": "--min-samples", "cluster.min_cluster_size": "--min-cluster-size",
    "assess.silhouette_sample": "--silhouette-sample", "assess.anomalies": "--anomalies",
    "features.sequence.cell": "--sequence-cell", "features.sequence.pooling": "--sequence-pooling",
    "features.sequence.dim": "--sequence-dim", "features.sequence.epochs": "--sequence-epochs",
    "features.sequence.item_init": "--item-init", "features.autoencoder.kind": "--autoencoder",
    "features.autoencoder.dim": "--autoencoder-dim", "features.autoencoder.epochs": "--autoencoder-epochs",
    "cluster.objective": "--objective", "cluster.balance": "--balance",
    "dask.scheduler": "--scheduler", "dask.workers": "--workers", "dask.threads_per_worker": "--threads-per-worker",
    "dask.memory_limit": "--memory-limit", "dask.partitions": "--partitions",
    "recommend.blend_weight": "--blend-weight", "privacy.min_group_size": "--min-group-size",
}


def flag(path: str) -> str:
    """A setting as the user names it: `--reduce-components (reduce.n_components)`, or the TOML key."""
    return f"{FLAGS[path]} ({path})" if path in FLAGS else path


def _get(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def _no_dead_settings(config: PipelineConfig, given: frozenset[str]) -> None:
    """A setting changed from its default where the chosen features, reducer or algorithm ignore it is
    an error: `--model` without text features, or `--eps` with k-means, would otherwise do nothing."""
    features, reduce, cluster = config.features, config.reduce, config.cluster
    algorithm = cluster.algorithm
    text_items = "sequence" in features.features and features.sequence.item_init == "text"
    *some, last = [name for name, spec in registry.ALGORITHMS.items() if spec.takes_k]
    with_k = f"{', '.join(some)} or {last}"
    ignored = {
        "features.text": ("text" not in features.features and not text_items,
                          "'text' in --features (or --item-init text)"),
        "features.sequence": ("sequence" not in features.features, "'sequence' in --features"),
        "features.autoencoder": ("autoencoder" not in features.features, "'autoencoder' in --features"),
        "features.normalise": ("behaviour" not in features.features, "'behaviour' in --features"),
        "features.tfidf_components": ("tfidf" not in features.features, "'tfidf' in --features"),
        "features.tfidf_vocabularies": ("tfidf" not in features.features, "'tfidf' in --features"),
        "reduce.engine": (reduce.method == registry.NO_REDUCER, "--reduce pca or umap"),
        "reduce.n_components": (reduce.method == registry.NO_REDUCER, "--reduce pca or umap"),
        "reduce.n_neighbors": (reduce.method != "umap", "--reduce umap"),
        "reduce.min_dist": (reduce.method != "umap", "--reduce umap"),
        "cluster.k": (not registry.ALGORITHMS[algorithm].takes_k, f"--algorithm {with_k}"),
        "cluster.k_values": (not registry.ALGORITHMS[algorithm].takes_k, f"--algorithm {with_k}"),
        "cluster.n_init": (algorithm != "kmeans", "--algorithm kmeans"),
        "cluster.max_iter": (algorithm != "kmeans", "--algorithm kmeans"),
        "cluster.tol": (algorithm != "kmeans", "--algorithm kmeans"),
        "cluster.eps": (algorithm != "dbscan", "--algorithm dbscan"),
        "cluster.min_samples": (algorithm not in ("dbscan", "hdbscan"), "--algorithm dbscan or hdbscan"),
        "cluster.min_cluster_size": (algorithm != "hdbscan", "--algorithm hdbscan"),
        "cluster.objective": (not cluster.k_values and not cluster.k_auto, "--k auto or a range of k"),
        "cluster.k_auto": (not registry.ALGORITHMS[algorithm].takes_k, f"--algorithm {with_k}"),
        "cluster.balance": (algorithm != "predictive", "--algorithm predictive"),
        "cluster.epochs": (algorithm != "predictive", "--algorithm predictive"),
        "dask.workers": (config.dask.scheduler != "local", "--scheduler local"),
        "dask.threads_per_worker": (config.dask.scheduler != "local", "--scheduler local"),
        "dask.memory_limit": (config.dask.scheduler != "local", "--scheduler local"),
        "dask.partitions": (config.dask.scheduler is None, "--scheduler"),
    }
    defaults = PipelineConfig()
    for path, (is_ignored, needs) in ignored.items():
        named = [g for g in given if g == path or g.startswith(path + ".")]
        if not is_ignored or (not named and _get(config, path) == _get(defaults, path)):
            continue
        if named:
            path = named[0]
        elif path in ("features.text", "features.sequence", "features.autoencoder"):  # name the one that differs
            section = _get(config, path)
            path = next(f"{path}.{f.name}" for f in dataclasses.fields(section)
                        if getattr(section, f.name) != getattr(type(section)(), f.name))
        raise UsageError(f"{flag(path)} has no effect without {needs}; drop it or add that")
    for name, weight in features.weights.items():
        if name not in features.features and weight != defaults.features.weights.get(name):
            raise UsageError(f"{flag('features.weights')} gives {name}={weight:g}, but {name!r} is not among the "
                             f"features ({', '.join(features.features)}); drop it or add {name} to --features")


def _check_learned(seq: SequenceConfig, ae: AutoencoderConfig) -> None:
    """The learned featurisers' settings: names from the registry, sizes positive, rates in range."""
    _one_of("features.sequence.cell", seq.cell, registry.SEQUENCE_CELLS)
    _one_of("features.sequence.pooling", seq.pooling, registry.SEQUENCE_POOLINGS)
    _one_of("features.sequence.item_init", seq.item_init, registry.ITEM_INITS)
    _one_of("features.autoencoder.kind", ae.kind, registry.AUTOENCODERS)
    for where, cfg in (("features.sequence", seq), ("features.autoencoder", ae)):
        _one_of(f"{where}.precision", cfg.precision, registry.PRECISIONS)
        if cfg.learning_rate is not None:
            _in_range(f"{where}.learning_rate", cfg.learning_rate, 0.0, 10.0, low_open=True)
        _in_range(f"{where}.dropout", cfg.dropout, 0.0, 0.95)
        _in_range(f"{where}.validation_share", cfg.validation_share, 0.0, 0.5)
        _at_least(f"{where}.patience", cfg.patience, 0)
        for name in ("dim", "epochs", "negatives"):
            if getattr(cfg, name) is not None:
                _at_least(f"{where}.{name}", getattr(cfg, name), 1)
    for path, value, low in (("features.sequence.layers", seq.layers, 1), ("features.sequence.horizon", seq.horizon, 1), ("features.sequence.max_length",
                             seq.max_length, 2), ("features.sequence.batch_tokens", seq.batch_tokens, 1),
                             ("features.autoencoder.hidden", ae.hidden, 1),
                             ("features.autoencoder.batch_users", ae.batch_users, 1)):
        if value is not None:
            _at_least(path, value, low)
    _in_range("features.autoencoder.beta", ae.beta, 0.0, MAX_BALANCE)  # float32 turns 1e300 into inf: an inf loss
    # Upper bounds: beyond them a model does not fit in memory (an item table of 10**9 dims) or takes
    # days to build (10**5 layers), and the failure would come late, as a traceback or a hang.
    for path, value, high, example in (
            ("features.sequence.dim", seq.dim, MAX_LEARNED_DIM, "--sequence-dim 64"),
            ("features.autoencoder.dim", ae.dim, MAX_LEARNED_DIM, "--autoencoder-dim 64"),
            ("features.autoencoder.hidden", ae.hidden, MAX_LEARNED_DIM, "hidden = 600"),
            ("features.sequence.layers", seq.layers, MAX_SEQUENCE_LAYERS, "layers = 2"),
            ("features.sequence.epochs", seq.epochs, MAX_EPOCHS, "--sequence-epochs 40"),
            ("features.autoencoder.epochs", ae.epochs, MAX_EPOCHS, "--autoencoder-epochs 150")):
        if value is not None and value > high:
            raise UsageError(f"{flag(path)} must be at most {high}, got {value}; e.g. {example}")
    if seq.cell == "transformer":
        if seq.max_length > MAX_TRANSFORMER_LENGTH:  # a position table and attention grow with it
            raise UsageError(f"{flag('features.sequence.max_length')} must be at most {MAX_TRANSFORMER_LENGTH} with "
                             f"--sequence-cell transformer, got {seq.max_length}; e.g. max_length = 200, or a gru")
        heads = max(1, (seq.dim or 0) // TRANSFORMER_HEAD_DIM)
        if seq.dim is not None and seq.dim % heads:
            raise UsageError(f"{flag('features.sequence.dim')} {seq.dim} does not split into {heads} attention heads "
                             f"of about {TRANSFORMER_HEAD_DIM} with --sequence-cell transformer; use a multiple of "
                             f"{TRANSFORMER_HEAD_DIM} such as {heads * TRANSFORMER_HEAD_DIM}")


def _in_range(path: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    """low <= value <= high (low < value with `low_open`), finite unless high is infinite."""
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        bound += "" if high == math.inf else f" and at most {high:g}"
        raise UsageError(f"{flag(path)} must be a number {bound}, got {value}")
_BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15, "ki": 2**10, "kib": 2**10, "mi": 2**20,
               "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40, "pi": 2**50, "pib": 2**50}


def memory_bytes(text: str) -> int | None:
    """Bytes of a --memory-limit ("10GiB", "4 GB", "2e9", "auto" -> None), as dask.utils.parse_bytes reads
    it; a UsageError for anything else, so a typo is refused here and not inside a starting cluster."""
    value = str(text).strip()
    if value.lower() == "auto":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)", value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _BYTE_UNITS:
        raise UsageError(f"{flag('dask.memory_limit')} {text!r} is not an amount of memory; give e.g. 4GiB, 4000MB "
                         "or auto")
    amount = float(match.group(1)) * _BYTE_UNITS[unit]
    if not math.isfinite(amount):
        raise UsageError(f"{flag('dask.memory_limit')} {text!r} is not an amount of memory; give e.g. 4GiB")
    return int(amount)


def local_cores() -> int:
    return os.cpu_count() or 1


def _check_dask(dask: DaskConfig) -> None:
    """The cluster's sizes and address, before any cluster starts: a typo or an absurd size is one line,
    not a traceback or a cluster that never finishes starting."""
    for path in ("dask.workers", "dask.threads_per_worker", "dask.partitions"):
        if _get_dask(dask, path) is not None:
            _at_least(path, _get_dask(dask, path), 1)
    if dask.partitions is not None and dask.partitions > MAX_PARTITIONS:
        raise UsageError(f"{flag('dask.partitions')} must be at most {MAX_PARTITIONS:,}, got {dask.partitions:,}; "
                         "a few per worker thread is enough (default: from the rows)")
    cores = local_cores()
    most = MAX_WORKERS_PER_CORE * cores
    workers, threads = dask.workers or 1, dask.threads_per_worker or 1
    if (dask.workers is not None or dask.threads_per_worker is not None) and workers * threads > most:
        raise UsageError(f"{flag('dask.workers')} x {flag('dask.threads_per_worker')} = {workers * threads} is more "
                         f"than {MAX_WORKERS_PER_CORE} per core of this {cores}-core machine (at most {most}); "
                         "more only compete for the cores and the memory")
    if dask.scheduler == "local" and dask.partitions is not None:  # the sizes of cluster.local_defaults
        workers = dask.workers or max(1, min(8, cores // threads))
        check_partitions(dask.partitions, workers * threads)
    if dask.memory_limit is not None:
        amount = memory_bytes(dask.memory_limit)
        if amount is not None and amount < MIN_WORKER_MEMORY:
            raise UsageError(f"{flag('dask.memory_limit')} {dask.memory_limit!r} is below the "
                             f"{MIN_WORKER_MEMORY // 2**20} MiB a worker needs; give e.g. 4GiB, or auto")
    if dask.scheduler is not None and not isinstance(dask.scheduler, str):
        return  # a distributed.Client given from Python
    if dask.scheduler not in (None, "local"):
        check_address(dask.scheduler)


def check_partitions(partitions: int, threads: int) -> None:
    """At most MAX_PARTITIONS_PER_THREAD partitions per worker thread of the cluster."""
    most = MAX_PARTITIONS_PER_THREAD * max(threads, 1)
    if partitions > most:
        raise UsageError(f"{flag('dask.partitions')} {partitions:,} is more than {MAX_PARTITIONS_PER_THREAD} per worker "
                         f"thread ({threads} here: at most {most:,}); each partition is a task in every stage, so "
                         "more only add overhead (default: from the rows)")


def _get_dask(dask: DaskConfig, path: str) -> Any:
    return getattr(dask, path.split(".", 1)[1])


def check_address(address: str) -> None:
    """A Dask scheduler address: SCHEME://HOST:PORT with a scheme distributed.comm speaks."""
    from urllib.parse import urlsplit

    scheme, sep, rest = address.partition("://")
    if not sep:
        raise UsageError(f"{flag('dask.scheduler')} {address!r} is neither 'local' nor a scheduler address such as "
                         "tcp://host:8786")
    if scheme.lower() not in SCHEDULER_SCHEMES:
        raise UsageError(f"{flag('dask.scheduler')} {address!r}: {scheme}:// is not a Dask scheduler's protocol; "
                         f"use one of {', '.join(s + '://' for s in SCHEDULER_SCHEMES)}, e.g. tcp://host:8786")
    try:
        parts = urlsplit("//" + rest)
        port = parts.port
    except ValueError:
        port, parts = -1, None
    if parts is None or not parts.hostname or port in (-1, 0, None) or parts.path or parts.query or \
            parts.fragment or parts.username is not None:
        raise UsageError(f"{flag('dask.scheduler')} {address!r} is not a scheduler address: give "
                         f"{scheme}://HOST:PORT, e.g. tcp://10.0.0.5:8786")


# What the Dask path does not (yet) distribute: each is one clear error, never a silent single-process run.
def _check_scheduler(config: PipelineConfig) -> None:
    learned = [name for name in config.features.features if name in ("sequence", "autoencoder")]
    unsupported = (
        (config.cluster.algorithm != "kmeans", f"--algorithm {config.cluster.algorithm}", "--algorithm kmeans"),
        (bool(config.cluster.k_values) or config.cluster.k_auto, "a k sweep (--k auto or a range)", "a fixed --k"),
        (config.reduce.method != registry.NO_REDUCER, f"--reduce {config.reduce.method}", "--reduce none"),
        (config.preprocess.sample_users is not None, "--sample-users", "all users (the cluster has room for them)"),
        (config.cluster.engine not in ("auto", "cuml"), f"--engine {config.cluster.engine}",
         "--engine auto (a distributed Lloyd on CPU workers, cuML's on GPU workers)"),
        (bool(learned), f"the learned feature {' and '.join(learned)}", "--features from behaviour, tfidf, text"),
    )
    for bad, what, instead in unsupported:
        if bad:
            raise UsageError(f"{what} does not run on a Dask cluster (--scheduler); use {instead}, or run without "
                             "--scheduler")


def _check_recommend(r: RecommendConfig) -> None:
    _one_of("recommend.personal", r.personal, registry.PERSONAL_MODELS)
    _at_least("recommend.min_items", r.min_items, 1)
    _at_least("recommend.tune_personal_users", r.tune_personal_users, 1)
    if not r.lambdas or not all(math.isfinite(v) and 0 < v <= MAX_EASE_LAMBDA for v in r.lambdas):
        raise UsageError(f"recommend.lambdas must be a non-empty list of positive numbers, each at most "
                         f"{MAX_EASE_LAMBDA:g}, got {list(r.lambdas)}; e.g. lambdas = [30, 100, 300, 1000]")
    if not r.neighbours or min(r.neighbours) < 1:
        raise UsageError(f"recommend.neighbours must be a non-empty list of positive integers, got "
                         f"{list(r.neighbours)}; e.g. neighbours = [20, 50, 100]")
    if not (math.isfinite(r.memory_gib) and r.memory_gib > 0):
        raise UsageError(f"recommend.memory_gib must be a positive number of GiB, got {r.memory_gib}")


def _one_of(path: str, value: str, valid: tuple[str, ...], where: str = "") -> None:
    if value not in valid:
        raise UsageError(f"unknown {flag(path)} {value!r}: choose one of {', '.join(valid)}{where}")


def _at_least(path: str, value: int, low: int) -> None:
    if value is None or value < low:
        raise UsageError(f"{flag(path)} must be at least {low}, got {value}")
