"""The plain recipe, as a named contender: TF-IDF of users over items -> TruncatedSVD -> scikit-learn KMeans.

What a practitioner writes first with scikit-learn's defaults (a users x items matrix of summed event
weights, `TfidfTransformer()`, `TruncatedSVD(32)`, `KMeans(k, n_init=10)`), implemented once, on the
host, whatever the backend: it is the yardstick the learned representations must beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import to_host
from gpuclust.frames import host_frame

NAME = "recipe (TF-IDF -> SVD -> KMeans)"


class PlainRecipe:
    """`embed(events, n_users, n_items)` once, then `labels(k)` for each k."""

    def __init__(self, n_components: int = 32, n_init: int = 10, seed: int = 0) -> None:
        self.n_components = n_components
        self.n_init = n_init
        self.seed = seed

    def embed(self, events: Any, n_users: int, n_items: int) -> PlainRecipe:
        """events: prepared events (user_idx, item_idx, weight), cuDF or pandas."""
        import scipy.sparse
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        frame = host_frame(events[[schema.USER_IDX, schema.ITEM_IDX, schema.WEIGHT]])
        counts = scipy.sparse.coo_matrix(
            (frame[schema.WEIGHT].to_numpy(np.float64), (frame[schema.USER_IDX].to_numpy(), frame[schema.ITEM_IDX].to_numpy())),
            shape=(n_users, n_items)).tocsr()
        tfidf = TfidfTransformer().fit_transform(counts)
        components = min(self.n_components, max(1, min(tfidf.shape) - 1))
        self.embedding_ = TruncatedSVD(components, random_state=self.seed).fit_transform(tfidf)
        return self

    def labels(self, k: int) -> np.ndarray:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed)
        return to_host(model.fit_predict(self.embedding_)).astype(np.int64)
