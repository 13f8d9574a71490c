"""The stage protocols, in one place: what a featuriser, reducer, clusterer and explainer must do, and
how a model you bring (scikit-learn, cuML, your own) is fitted into them.

gpuclust's own stages take the run's `Backend` (where the work happens) as an argument. Anything else
is treated as a scikit-learn-style estimator on arrays: gpuclust hands it host NumPy (or, for cuML,
the device array) and brings what it returns back onto the backend. The rule that tells them apart:
a `fit` / `fit_transform` with a parameter called `backend` is a gpuclust stage.

- Featurizer: `name` (`registry.FEATURE_NAME`: it keys the stage, manifest entries and saved arrays);
  `fit_transform(data, backend)` and `transform(data, backend)` return float32
  (n_users, d) in `backend.xp`, row i = user_idx i; `state()` / `from_state(meta, arrays, backend)`
  carry it through a saved model. `data` is a `PreparedData`.
- Reducer: `fit_transform(x, backend)`, `transform(x, backend)`. Foreign: `fit_transform(X)`,
  `transform(X)` (scikit-learn's PCA, TruncatedSVD, UMAP, cuML's). Linear ones (`components_`,
  optionally `mean_`) are saved with the model; others make it unsaveable.
- Clusterer: `fit(x, backend)` sets `labels_` (int, -1 = noise) and optionally `cluster_centers_`.
  One that learns clusters for a use may also name `data` (the PreparedData the rows of x measure)
  and `measure` (a function PreparedData -> vectors in the space of x, e.g. for part of the events):
  `fit_clusterer` passes them where a fit names them.
  Foreign: `fit(X)` and `labels_` (KMeans, MiniBatchKMeans, HDBSCAN, Birch, cuML's). Where an estimator
  has no centres, gpuclust takes each cluster's member mean; distances and the placement of new users
  are always computed by gpuclust from the centres, so a saved model needs no pickle.
- Representation (the explainer): `explain(data, x, outcome, backend, stats)` returns an `Explanation`.

What a sub-model returns is checked here, once, for gpuclust's stages and anyone's alike (`checked_matrix`,
`checked_labels`, `checked_centres`, `checked_explanation`): a wrong shape, a non-numeric dtype or a NaN
becomes a `UsageError` that names the sub-model, instead of an IndexError three stages later or, worse,
clusters that silently mean nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gpuclust.backend import Backend, to_host
from gpuclust.errors import UsageError


@runtime_checkable
class Featurizer(Protocol):
    name: str

    def fit_transform(self, data: Any, backend: Backend) -> Any: ...

    def transform(self, data: Any, backend: Backend) -> Any: ...


class Reducer(Protocol):
    def fit_transform(self, x: Any, backend: Backend) -> Any: ...

    def transform(self, x: Any, backend: Backend) -> Any: ...


class Clusterer(Protocol):
    labels_: Any

    def fit(self, x: Any, backend: Backend) -> Any: ...


def describe(obj: Any) -> str:
    """How a message names a sub-model: its `name` or `algorithm` where it has one, else its class."""
    if isinstance(obj, ForeignReducer | ForeignClusterer):
        return type(obj.estimator).__name__
    for attribute in ("name", "algorithm"):
        value = getattr(obj, attribute, None)
        if isinstance(value, str) and value:
            return value if value == type(obj).__name__ else f"{value!r} ({type(obj).__name__})"
    return type(obj).__name__


def _numeric(owner: str, value: Any, what: str, backend: Backend) -> Any:
    """`value` as an array of the backend, or a UsageError saying what `owner` gave instead."""
    if value is None:
        raise UsageError(f"{owner} returned None as its {what}: it must return an array")
    try:
        array = backend.asarray(value)
    except Exception as exc:  # noqa: BLE001 - whatever a foreign object is, say it is not an array
        raise UsageError(f"{owner} gave {type(value).__name__} as its {what}, which is not a numeric "
                         f"array ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    kind = getattr(getattr(array, "dtype", None), "kind", "O")
    if kind not in "biuf":
        raise UsageError(f"{owner} gave {what} of dtype {array.dtype}: they must be numbers")
    return array


def checked_matrix(owner: str, value: Any, n_rows: int, backend: Backend, what: str = "features") -> Any:
    """A (n_rows, d >= 1) float32 matrix of finite numbers on the backend, from whatever `owner` returned."""
    array = _numeric(owner, value, what, backend)
    if array.ndim != 2:
        raise UsageError(f"{owner} returned {what} of shape {tuple(array.shape)}: expected a 2-D "
                         f"(users, dimensions) array with {n_rows:,} rows, one per user")
    if int(array.shape[0]) != n_rows or int(array.shape[1]) < 1:
        raise UsageError(f"{owner} returned {what} of shape {tuple(array.shape)} for {n_rows:,} users: expected "
                         f"{n_rows:,} rows (row i = user_idx i) and at least one column")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, which the next line reports
        array = array.astype(np.float32, copy=False)
    bad = int((~backend.xp.isfinite(array)).any(axis=1).sum())
    if bad:
        raise UsageError(f"{owner} returned NaN or infinite {what} (or values beyond float32) for {bad:,} of "
                         f"{n_rows:,} users: every value must be a finite number")
    return array


def checked_labels(owner: str, value: Any, n_rows: int, backend: Backend) -> Any:
    """int32 labels, one per user: 0..k-1 for clusters, negative for noise; whole numbers only."""
    labels = _numeric(owner, value, "labels_", backend)
    if labels.ndim != 1 or int(labels.shape[0]) != n_rows:
        raise UsageError(f"{owner} set labels_ of shape {tuple(labels.shape)} for {n_rows:,} users: expected one "
                         "label per user (a 1-D array)")
    if labels.dtype.kind == "f":
        xp = backend.xp
        fraction = ~xp.isfinite(labels) | (labels != xp.floor(labels))
        if bool(fraction.any()):
            example = float(to_host(labels[xp.argmax(fraction)]))
            raise UsageError(f"{owner} set labels_ that are not whole numbers (e.g. {example}): a label is a "
                             "cluster number 0..k-1, or -1 for noise")
    if n_rows and float(labels.max()) >= n_rows:
        raise UsageError(f"{owner} set a label {float(labels.max()):g} for {n_rows:,} users: labels are cluster "
                         "numbers 0..k-1 with k at most the number of users")
    return labels.astype(backend.xp.int32)


def checked_centres(owner: str, value: Any, labels: Any, n_features: int, backend: Backend) -> Any:
    """(k, n_features) float32 finite centres, with a centre for every label used."""
    centres = _numeric(owner, value, "cluster_centers_", backend)
    if centres.ndim != 2 or int(centres.shape[1]) != n_features:
        raise UsageError(f"{owner} set cluster_centers_ of shape {tuple(centres.shape)}: expected (k, {n_features}), "
                         f"one row per cluster in the {n_features}-dimensional space it clustered")
    used = int(labels.max()) + 1 if int(labels.shape[0]) else 0
    if int(centres.shape[0]) < used:
        raise UsageError(f"{owner} set {int(centres.shape[0])} cluster_centers_ but labels up to {used - 1}: every "
                         "cluster label needs its centre")
    with np.errstate(over="ignore"):
        centres = centres.astype(np.float32)
    if not bool(backend.xp.isfinite(centres).all()):
        raise UsageError(f"{owner} set cluster_centers_ with NaN or infinite values (or beyond float32): every "
                         "centre must be finite")
    return centres


def takes_backend(method: Any) -> bool:
    """Whether a fit method is a gpuclust stage's (it takes the backend) rather than a foreign one's."""
    try:
        return "backend" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _on_engine(estimator: Any, x: Any, backend: Backend) -> Any:
    """cuML takes device arrays; everything else gets a host NumPy copy."""
    if backend.on_gpu and type(estimator).__module__.startswith("cuml"):
        return x
    return np.ascontiguousarray(to_host(x), dtype=np.float32)


class ForeignReducer:
    """A scikit-learn-style reducer (`fit_transform(X)`, `transform(X)`) as a gpuclust stage."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    @property
    def name(self) -> str:
        return type(self.estimator).__name__

    def fit_transform(self, x: Any, backend: Backend) -> Any:
        out = self.estimator.fit_transform(_on_engine(self.estimator, x, backend))
        out = checked_matrix(f"reducer {self.name}", out, int(x.shape[0]), backend, "reduced vectors")
        self.engine_ = type(self.estimator).__module__.split(".")[0]
        self.info_ = {"method": self.name, "engine": self.engine_,
                      "n_components": int(out.shape[1]), "input_dims": int(x.shape[1])}
        return out

    def transform(self, x: Any, backend: Backend) -> Any:
        if not hasattr(self.estimator, "transform"):
            raise UsageError(f"reducer {self.name} cannot transform new users (no transform method)")
        return self.estimator.transform(_on_engine(self.estimator, x, backend))

    @property
    def components_(self) -> Any:
        return self.estimator.components_

    @property
    def mean_(self) -> Any:
        return getattr(self.estimator, "mean_", None)


class ForeignClusterer:
    """A scikit-learn-style clusterer (`fit(X)`, `labels_`, maybe `cluster_centers_`) as a gpuclust stage."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    @property
    def algorithm(self) -> str:
        return type(self.estimator).__name__

    @property
    def n_clusters(self) -> int | None:
        return getattr(self.estimator, "n_clusters", None)

    def fit(self, x: Any, backend: Backend) -> ForeignClusterer:
        if _labels_from_fit_predict(self.estimator):  # a mixture model: labels by fit_predict, no labels_
            labels = self.estimator.fit_predict(_on_engine(self.estimator, x, backend))
        else:
            self.estimator.fit(_on_engine(self.estimator, x, backend))
            labels = getattr(self.estimator, "labels_", None)
        if labels is None:
            raise UsageError(f"clusterer {self.algorithm} set no labels_ after fit: a clusterer must label each user")
        self.labels_ = labels
        centres = getattr(self.estimator, "cluster_centers_", None)
        if centres is not None:
            self.cluster_centers_ = centres
        self.engine_ = type(self.estimator).__module__.split(".")[0]
        for name in ("inertia_", "n_iter_"):
            if hasattr(self.estimator, name):
                setattr(self, name, getattr(self.estimator, name))
        return self


def fit_clusterer(clusterer: Any, x: Any, backend: Backend, data: Any = None, measure: Any = None) -> Any:
    """`clusterer.fit(x, backend)`, plus `data` and `measure` for a fit that names them; what the fit
    set (`labels_`, `cluster_centers_`) is checked and replaced by its checked form."""
    try:
        named = inspect.signature(clusterer.fit).parameters
    except (TypeError, ValueError):
        named = {}
    extra = {name: value for name, value in (("data", data), ("measure", measure)) if name in named}
    clusterer.fit(x, backend, **extra)
    owner = f"clusterer {describe(clusterer)}"
    if getattr(clusterer, "labels_", None) is None:
        raise UsageError(f"{owner} set no labels_ after fit: a clusterer must label each user")
    clusterer.labels_ = checked_labels(owner, clusterer.labels_, int(x.shape[0]), backend)
    if getattr(clusterer, "cluster_centers_", None) is not None:
        clusterer.cluster_centers_ = checked_centres(owner, clusterer.cluster_centers_, clusterer.labels_,
                                                     int(x.shape[1]), backend)
    return clusterer


def fit_reduced(reducer: Any, x: Any, backend: Backend) -> Any:
    """`reducer.fit_transform(x, backend)`, checked: one finite row per user."""
    return checked_matrix(f"reducer {describe(reducer)}", reducer.fit_transform(x, backend), int(x.shape[0]),
                          backend, "reduced vectors")


def reduced(reducer: Any, x: Any, backend: Backend) -> Any:
    """`reducer.transform(x, backend)` for new users, checked as at fit time."""
    return checked_matrix(f"reducer {describe(reducer)}", reducer.transform(x, backend), int(x.shape[0]), backend,
                          "reduced vectors")


def featurised(featurizer: Featurizer, data: Any, backend: Backend, fit: bool) -> Any:
    """A featuriser's block for the users of `data` (`fit_transform` or `transform`), checked: a finite
    (n_users, d) float32 matrix on the backend."""
    method = featurizer.fit_transform if fit else featurizer.transform
    return checked_matrix(f"featuriser {describe(featurizer)}", method(data, backend), int(data.n_users), backend)


def as_representation(representation: Any) -> Any:
    """The explainer, if it has a callable `explain`."""
    if not callable(getattr(representation, "explain", None)):
        raise UsageError(f"representation {describe(representation)} has no explain(data, x, outcome, backend, "
                         "stats) method; pass an object with one (see gpuclust.explain.explainer.ClusterExplainer)")
    return representation


EXPLANATION_FIELDS = ("profiles", "population", "anomalies", "scores", "spread", "map")


def checked_explanation(representation: Any, explained: Any, n_clusters: int, n_rows: int, backend: Backend) -> Any:
    """What a representation's `explain` returned, with the fields the estimator reads."""
    owner = f"representation {describe(representation)}"
    missing = [f for f in EXPLANATION_FIELDS if not hasattr(explained, f)]
    if missing:
        raise UsageError(f"{owner}.explain returned {type(explained).__name__} without {', '.join(missing)}: it "
                         "must return a gpuclust.explain.explainer.Explanation")
    scores = _numeric(owner, explained.scores, "anomaly scores", backend)
    if scores.ndim != 1 or int(scores.shape[0]) != n_rows:
        raise UsageError(f"{owner}.explain returned anomaly scores of shape {tuple(scores.shape)} for {n_rows:,} "
                         "users: expected one per user")
    spread = explained.spread
    if not (isinstance(spread, tuple | list) and len(spread) == 2):
        raise UsageError(f"{owner}.explain returned a spread that is not a (median, scale) pair")
    for part in spread:
        part = _numeric(owner, part, "spread", backend)
        if part.ndim != 1 or int(part.shape[0]) != n_clusters:
            raise UsageError(f"{owner}.explain returned a spread of shape {tuple(part.shape)}: expected one value "
                             f"per cluster ({n_clusters})")
    return explained


class _Guarded:
    """A progress callback whose failure is reported as the caller's (a class, not a closure, so that a
    model holding it still pickles)."""

    def __init__(self, callback: Callable[[str], None]) -> None:
        self.callback = callback

    def __call__(self, line: str) -> None:
        try:
            self.callback(line)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the caller's callback is reported as theirs
            name = getattr(self.callback, "__qualname__", type(self.callback).__name__)
            raise UsageError(f"the progress callback {name} raised {type(exc).__name__}: {exc}; fix it, or pass "
                             "progress=None") from exc


def guarded(callback: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """A progress callback whose failure is the caller's to fix (a UsageError naming it), not a traceback
    from deep inside a stage; Ctrl-C (KeyboardInterrupt) passes through untouched. A failing callback
    stops the fit rather than being ignored: it is the caller's code, and a silent skip would hide it."""
    if callback is None or isinstance(callback, _Guarded):
        return callback
    if not callable(callback):
        raise UsageError(f"progress must be a function taking one line of text, got {type(callback).__name__}")
    return _Guarded(callback)


def as_reducer(reducer: Any) -> Any:
    if reducer is None or takes_backend(getattr(reducer, "fit_transform", None)):
        return reducer
    if not hasattr(reducer, "fit_transform"):
        raise UsageError(f"reducer {type(reducer).__name__} has no fit_transform method")
    return ForeignReducer(reducer)


def as_clusterer(clusterer: Any) -> Any:
    """A clusterer as a gpuclust stage; one that cannot label users is refused here, before any fit
    (a scikit-learn estimator that is neither a clusterer nor a mixture model, such as PCA)."""
    if takes_backend(getattr(clusterer, "fit", None)):
        return clusterer
    if not hasattr(clusterer, "fit"):
        raise UsageError(f"clusterer {type(clusterer).__name__} has no fit method")
    if _sklearn_kind(clusterer) == "other" and not _labels_from_fit_predict(clusterer):
        raise UsageError(f"clusterer {type(clusterer).__name__} is not a clustering model (scikit-learn does not tag "
                         "it a clusterer, and it has no fit_predict and predict_proba of a mixture model): give one "
                         "that labels users, e.g. KMeans, HDBSCAN, Birch or GaussianMixture")
    return ForeignClusterer(clusterer)


def _sklearn_kind(estimator: Any) -> str:
    """"clusterer" or "other" for a scikit-learn estimator (by its tags), "unknown" for anything else
    (cuML's, your own), whose labels_ are checked after the fit."""
    if type(estimator).__module__.split(".")[0] == "cuml" or not hasattr(estimator, "__sklearn_tags__"):
        return "unknown"
    try:
        from sklearn.base import is_clusterer

        return "clusterer" if is_clusterer(estimator) else "other"
    except Exception:  # noqa: BLE001 - tags of a half-compatible estimator: decide after the fit
        return "unknown"


def _labels_from_fit_predict(estimator: Any) -> bool:
    """A mixture model (GaussianMixture, BayesianGaussianMixture): labels come from fit_predict, since
    it keeps no labels_."""
    return (_sklearn_kind(estimator) == "other" and hasattr(estimator, "fit_predict")
            and hasattr(estimator, "predict_proba"))
