"""The featuriser contract: each one turns PreparedData into a users x d matrix on the device."""

from __future__ import annotations

from typing import Any, Protocol

from gpuclust.backend import Backend
from gpuclust.preprocess.prepared import PreparedData


class Featurizer(Protocol):
    """A stage with one job; returns float32 (n_users, d) in `backend.xp`, row i = user_idx i.

    `fit_transform` learns what new users must be measured against (scales, IDF, SVD components, item
    vectors); `transform` applies it to new users; `state`/`from_state` carry it through a saved model
    as (JSON-able meta, named arrays). `info_` holds what the manifest records.
    """

    name: str

    def fit_transform(self, data: PreparedData, backend: Backend) -> Any: ...

    def transform(self, data: PreparedData, backend: Backend) -> Any: ...

    def state(self) -> tuple[dict, dict]: ...

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, backend: Backend) -> Featurizer: ...
