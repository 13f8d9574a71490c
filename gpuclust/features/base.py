"""The featuriser contract: each one turns PreparedData into a users x d matrix on the device."""

from __future__ import annotations

from typing import Any, Protocol

from gpuclust.backend import Backend
from gpuclust.preprocess.prepared import PreparedData


class Featurizer(Protocol):
    """A stage with one job; `fit_transform` returns float32 (n_users, d) in `backend.xp`.

    Rows follow `data.users` (row i is user_idx i). `info_` holds what the manifest should record
    (dimensions, model, timings); `names_` names each column where columns have meaning.
    """

    name: str

    def fit_transform(self, data: PreparedData, backend: Backend) -> Any: ...
