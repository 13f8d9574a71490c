"""The plain recipe, as a named contender: TF-IDF of users over items -> TruncatedSVD -> scikit-learn KMeans.

What a practitioner writes first with scikit-learn's defaults (a users x items matrix of summed event
weights, `TfidfTransformer()`, `TruncatedSVD(32)`, `KMeans(k, n_init=10)`), implemented once, on the
host, whatever the backend: it is the yardstick the learned representations must beat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gpuclust.backend import to_host

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

NAME = "recipe (TF-IDF -> SVD -> KMeans)"


class PlainRecipe:
    """`embed(table, n_users, n_items)` once, then `labels(k)` for each k."""

    def __init__(self, n_components: int = 32, n_init: int = 10, seed: int = 0) -> None:
        self.n_components = n_components
        self.n_init = n_init
        self.seed = seed

    def embed(self, table: EventTable, n_users: int, n_items: int) -> PlainRecipe:
        """table: the prepared events (`EventTable`); their user, item and weight arrays come to the host."""
        import scipy.sparse
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        counts = scipy.sparse.coo_matrix(
            (to_host(table.weight).astype(np.float64), (to_host(table.user), to_host(table.item))),
            shape=(n_users, n_items)).tocsr()
        tfidf = TfidfTransformer().fit_transform(counts)
        components = min(self.n_components, max(1, min(tfidf.shape) - 1))
        self.embedding_ = TruncatedSVD(components, random_state=self.seed).fit_transform(tfidf)
        return self

    def labels(self, k: int) -> np.ndarray:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed)
        return to_host(model.fit_predict(self.embedding_)).astype(np.int64)
