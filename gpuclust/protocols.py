"""The stage protocols, in one place: what a featuriser, reducer, clusterer and explainer must do, and
how a model you bring (scikit-learn, cuML, your own) is fitted into them.

gpuclust's own stages take the run's `Backend` (where the work happens) as an argument. Anything else
is treated as a scikit-learn-style estimator on arrays: gpuclust hands it host NumPy (or, for cuML,
the device array) and brings what it returns back onto the backend. The rule that tells them apart:
a `fit` / `fit_transform` with a parameter called `backend` is a gpuclust stage.

- Featurizer: `name`; `fit_transform(data, backend)` and `transform(data, backend)` return float32
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
"""

from __future__ import annotations

import inspect
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

    def fit_transform(self, x: Any, backend: Backend) -> Any:
        out = self.estimator.fit_transform(_on_engine(self.estimator, x, backend))
        self.engine_ = type(self.estimator).__module__.split(".")[0]
        self.info_ = {"method": type(self.estimator).__name__, "engine": self.engine_,
                      "n_components": int(out.shape[1]), "input_dims": int(x.shape[1])}
        return backend.asarray(out, dtype=np.float32)

    def transform(self, x: Any, backend: Backend) -> Any:
        if not hasattr(self.estimator, "transform"):
            raise UsageError(f"{type(self.estimator).__name__} cannot transform new users (no transform method)")
        return backend.asarray(self.estimator.transform(_on_engine(self.estimator, x, backend)), dtype=np.float32)

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
        self.estimator.fit(_on_engine(self.estimator, x, backend))
        labels = getattr(self.estimator, "labels_", None)
        if labels is None:
            raise UsageError(f"{self.algorithm} set no labels_ after fit: a clusterer must label each user")
        self.labels_ = backend.asarray(labels).astype(backend.xp.int32)
        centres = getattr(self.estimator, "cluster_centers_", None)
        if centres is not None:
            self.cluster_centers_ = backend.asarray(centres, dtype=np.float32)
        self.engine_ = type(self.estimator).__module__.split(".")[0]
        for name in ("inertia_", "n_iter_"):
            if hasattr(self.estimator, name):
                setattr(self, name, getattr(self.estimator, name))
        return self


def fit_clusterer(clusterer: Any, x: Any, backend: Backend, data: Any = None, measure: Any = None) -> Any:
    """`clusterer.fit(x, backend)`, plus `data` and `measure` for a fit that names them."""
    try:
        named = inspect.signature(clusterer.fit).parameters
    except (TypeError, ValueError):
        named = {}
    extra = {name: value for name, value in (("data", data), ("measure", measure)) if name in named}
    return clusterer.fit(x, backend, **extra)


def as_reducer(reducer: Any) -> Any:
    if reducer is None or takes_backend(getattr(reducer, "fit_transform", None)):
        return reducer
    if not hasattr(reducer, "fit_transform"):
        raise UsageError(f"reducer {type(reducer).__name__} has no fit_transform method")
    return ForeignReducer(reducer)


def as_clusterer(clusterer: Any) -> Any:
    if takes_backend(getattr(clusterer, "fit", None)):
        return clusterer
    if not hasattr(clusterer, "fit"):
        raise UsageError(f"clusterer {type(clusterer).__name__} has no fit method")
    return ForeignClusterer(clusterer)
