"""TF-IDF of users over items and categories, reduced by a randomized truncated SVD (LSA).

The users x vocabulary matrices are sparse on both devices (SciPy / cupyx); only the n_users x
components result is dense.
"""

from __future__ import annotations

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend
from gpuclust.errors import UsageError
from gpuclust.features.svd import randomized_svd
from gpuclust.frames import column_array
from gpuclust.preprocess.prepared import PreparedData


def tfidf(counts, backend: Backend):
    """log1p TF (weighted counts may be below 1), smooth IDF as scikit-learn's, L2-normalised rows."""
    xp = backend.xp
    x = counts.tocsr().astype(np.float32)
    x.sum_duplicates()
    x.data = xp.log1p(x.data).astype(np.float32)
    n_rows, n_cols = x.shape
    df = xp.bincount(x.indices, minlength=n_cols).astype(np.float32)
    idf = xp.log((1.0 + n_rows) / (1.0 + df)) + 1.0
    x.data *= idf[x.indices]
    return l2_rows_sparse(x, xp)


def l2_rows_sparse(x, xp):
    # Row of each stored value; searchsorted works on both devices (cupy.repeat needs host counts).
    rows = xp.searchsorted(x.indptr, xp.arange(x.nnz), side="right") - 1
    norms = xp.sqrt(xp.bincount(rows, weights=x.data.astype(np.float64) ** 2, minlength=x.shape[0]))
    x.data /= xp.where(norms > 0, norms, 1.0)[rows].astype(np.float32)
    return x


def l2_rows(x, xp):
    norms = xp.linalg.norm(x, axis=1, keepdims=True)
    return x / xp.where(norms > 0, norms, 1.0)


def user_vocabulary_counts(data: PreparedData, backend: Backend, vocabulary: str):
    """users x items or users x categories, summing event weights (a purchase counts more than a view)."""
    xp = backend.xp
    users = column_array(data.events[schema.USER_IDX], backend, np.int32)
    items = column_array(data.events[schema.ITEM_IDX], backend, np.int32)
    weights = column_array(data.events[schema.WEIGHT], backend, np.float32)
    if vocabulary == "item":
        cols, n_cols = items, data.n_items
    else:
        codes, n_cols = category_codes(data, backend)
        cols = codes[items]
        keep = cols >= 0
        users, cols, weights = users[keep], cols[keep], weights[keep]
    return backend.sparse.coo_matrix((weights, (users, cols)), shape=(data.n_users, n_cols), dtype=xp.float32)


def category_codes(data: PreparedData, backend: Backend):
    """Per item_idx, the index of its category (-1 where unknown), and the number of categories."""
    categories = data.items[schema.CATEGORY]
    names = categories.dropna().drop_duplicates().sort_values().reset_index(drop=True)
    table = names.to_frame()
    table["_code"] = np.arange(len(names), dtype=np.int32)
    coded = data.items[[schema.ITEM_IDX, schema.CATEGORY]].merge(table, on=schema.CATEGORY, how="left")
    coded = coded.sort_values(schema.ITEM_IDX)
    codes = column_array(coded["_code"].fillna(-1), backend, np.int32)
    return codes, len(names)


class TfidfFeaturizer:
    """LSA per vocabulary; each vocabulary's block is row-normalised so cosine geometry holds."""

    name = "tfidf"

    def __init__(self, vocabularies: tuple[str, ...] = ("item", "category"), n_components: int = 32,
                 oversamples: int = 10, power_iterations: int = 4, seed: int = 0) -> None:
        self.vocabularies = vocabularies
        self.n_components = n_components
        self.oversamples = oversamples
        self.power_iterations = power_iterations
        self.seed = seed

    def fit_transform(self, data: PreparedData, backend: Backend):
        xp = backend.xp
        blocks, self.info_ = [], {"vocabularies": {}}
        for vocab in self.vocabularies:
            if vocab == "category" and not data.has_categories:
                self.info_["vocabularies"][vocab] = "skipped: no category column in the items input"
                continue
            x = tfidf(user_vocabulary_counts(data, backend, vocab), backend)
            if x.shape[1] <= self.n_components:
                reduced = x.toarray()  # already small: keep every column
                explained = 1.0
            else:
                reduced, s, _ = randomized_svd(x, self.n_components, xp, self.seed, self.oversamples,
                                               self.power_iterations)
                explained = float((s**2).sum() / (x.data.astype(np.float64) ** 2).sum())
            blocks.append(l2_rows(reduced.astype(np.float32), xp))
            self.info_["vocabularies"][vocab] = {
                "terms": int(x.shape[1]), "dims": int(reduced.shape[1]), "explained_variance": round(explained, 4),
            }
        if not blocks:
            raise UsageError("the tfidf feature has no vocabulary to use: add 'item' to its vocabularies "
                             "or give an items file with a category column")
        out = xp.concatenate(blocks, axis=1)
        self.info_["dims"] = int(out.shape[1])
        return out
