"""TF-IDF of users over items and categories, reduced by a randomized truncated SVD (LSA).

The users x vocabulary matrices are sparse on both devices (SciPy / cupyx); only the n_users x
components result is dense.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend
from gpuclust.errors import UsageError
from gpuclust.features.svd import randomized_svd
from gpuclust.frames import column_array, host_frame
from gpuclust.preprocess.parse import F32_MAX
from gpuclust.preprocess.prepared import PreparedData

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable


def tfidf(counts, backend: Backend, idf=None):
    """log1p TF (weighted counts may be below 1), smooth IDF as scikit-learn's, L2-normalised rows.

    Returns (matrix, idf); pass a fitted `idf` to weight new users as the fitted ones were.
    """
    xp = backend.xp
    x = counts.tocsr().astype(np.float32)
    x.sum_duplicates()
    # A weighted count past float32 (huge event weights) is held at its largest value, as behaviour's sums
    # are: infinite, it made the row NaN and the features were refused.
    x.data = xp.log1p(xp.minimum(x.data, xp.float32(F32_MAX))).astype(np.float32)
    if idf is None:
        idf = smooth_idf(xp.bincount(x.indices, minlength=x.shape[1]), x.shape[0], xp)
    x.data *= idf[x.indices]
    return l2_rows_sparse(x, xp), idf


def smooth_idf(document_frequency, n_documents: int, xp):
    """scikit-learn's smooth IDF, log((1 + n) / (1 + df)) + 1, float32: from one matrix or summed partitions."""
    return (xp.log((1.0 + n_documents) / (1.0 + document_frequency.astype(np.float32))) + 1.0).astype(np.float32)


def l2_rows_sparse(x, xp):
    # Row of each stored value; searchsorted works on both devices (cupy.repeat needs host counts).
    rows = xp.searchsorted(x.indptr, xp.arange(x.nnz), side="right") - 1
    norms = xp.sqrt(xp.bincount(rows, weights=x.data.astype(np.float64) ** 2, minlength=x.shape[0]))
    x.data /= xp.where(norms > 0, norms, 1.0)[rows].astype(np.float32)
    return x


def l2_rows(x, xp):
    norms = xp.linalg.norm(x, axis=1, keepdims=True)
    return x / xp.where(norms > 0, norms, 1.0)


def user_vocabulary_counts(data: PreparedData, backend: Backend, vocabulary: str, categories=None):
    """users x items or users x categories, summing event weights (a purchase counts more than a view)."""
    xp = backend.xp
    t: EventTable = data.table
    users, items, weights = backend.asarray(t.user), backend.asarray(t.item), backend.asarray(t.weight)
    if vocabulary == "item":
        cols, n_cols = items, data.n_items
    else:
        codes, n_cols = category_codes(data, backend, categories)
        cols = codes[items]
        keep = cols >= 0
        users, cols, weights = users[keep], cols[keep], weights[keep]
    return backend.sparse.coo_matrix((weights, (users, cols)), shape=(data.n_users, n_cols), dtype=xp.float32)


def category_names(data: PreparedData) -> list[str]:
    """The sorted distinct categories of the catalogue (a small host list)."""
    names = data.items[schema.CATEGORY].dropna().drop_duplicates().sort_values()
    return [str(n) for n in host_frame(names.to_frame()).iloc[:, 0]]


def category_vocabulary(data: PreparedData) -> tuple[list[str] | None, str | None]:
    """(the catalogue's categories, None), or (None, why the category vocabulary is skipped): without a
    category column, or with one that holds no value, it would be a block of 0 terms, and with no other
    vocabulary the features would have no column at all."""
    if not data.has_categories:
        return None, "skipped: no category column in the items input"
    names = category_names(data)
    return (names, None) if names else (None, "skipped: the items input's category column has no values")


NO_VOCABULARY = ("the tfidf feature has no vocabulary to use: add 'item' to its vocabularies (tfidf_vocabularies "
                 "under [features] in a --config TOML), or give an items file whose category column has values")


def category_codes(data: PreparedData, backend: Backend, names: list[str] | None = None):
    """Per item_idx, the index of its category in `names` (-1 where unknown), and len(names)."""
    names = category_names(data) if names is None else names
    return catalogue_category_codes(data.items, names, backend), len(names)


def catalogue_category_codes(items, names: list[str], backend: Backend):
    """Per item_idx of a catalogue frame (item_idx, category), the index of its category in `names`,
    -1 where it has none or one not in `names`: for the fit, `transform` and the service alike."""
    table = backend.frame.DataFrame({schema.CATEGORY: names, "_code": np.arange(len(names), dtype=np.int32)})
    items = items[[schema.ITEM_IDX, schema.CATEGORY]].astype({schema.CATEGORY: "str"})
    coded = items.merge(table, on=schema.CATEGORY, how="left").sort_values(schema.ITEM_IDX)
    return column_array(coded["_code"].fillna(-1), backend, np.int32)


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
        blocks, self.info_, self.fitted_ = [], {"vocabularies": {}}, {}
        for vocab in self.vocabularies:
            names, skipped = category_vocabulary(data) if vocab == "category" else (None, None)
            if skipped:
                self.info_["vocabularies"][vocab] = skipped
                continue
            x, idf = tfidf(user_vocabulary_counts(data, backend, vocab, names), backend)
            if x.shape[1] <= self.n_components:
                reduced, vt, explained = x.toarray(), None, 1.0  # already small: keep every column
            else:
                _, s, vt = randomized_svd(x, self.n_components, xp, self.seed, self.oversamples,
                                          self.power_iterations)
                reduced = x @ vt.T  # = U S up to the sketch's error; what transform() computes for new users
                explained = float((s**2).sum() / (x.data.astype(np.float64) ** 2).sum())
            blocks.append(l2_rows(reduced.astype(np.float32), xp))
            self.fitted_[vocab] = {"idf": idf, "components": vt, "categories": names}
            self.info_["vocabularies"][vocab] = {
                "terms": int(x.shape[1]), "dims": int(reduced.shape[1]), "explained_variance": round(explained, 4),
            }
        if not blocks:
            raise UsageError(NO_VOCABULARY)
        out = xp.concatenate(blocks, axis=1)
        self.info_["dims"] = int(out.shape[1])
        return out

    def transform(self, data: PreparedData, backend: Backend):
        """New users through the fitted IDF and SVD components (item indices follow the model's)."""
        return self.transform_counts({vocab: user_vocabulary_counts(data, backend, vocab, fitted["categories"])
                                      for vocab, fitted in self.fitted_.items()}, backend)

    def transform_counts(self, counts: dict, backend: Backend):
        """`transform` from each fitted vocabulary's users x terms weighted counts (the service builds
        them from a request's arrays)."""
        xp = backend.xp
        blocks = []
        for vocab, fitted in self.fitted_.items():
            x, _ = tfidf(counts[vocab], backend, fitted["idf"])
            reduced = x.toarray() if fitted["components"] is None else x @ fitted["components"].T
            blocks.append(l2_rows(xp.asarray(reduced, dtype=np.float32), xp))
        return xp.concatenate(blocks, axis=1)

    def state(self) -> tuple[dict, dict]:
        meta = {"vocabularies": self.vocabularies, "n_components": self.n_components, "seed": self.seed,
                "fitted": {v: {"categories": f["categories"], "reduced": f["components"] is not None}
                           for v, f in self.fitted_.items()}}
        arrays = {}
        for vocab, fitted in self.fitted_.items():
            arrays[f"{vocab}.idf"] = fitted["idf"]
            if fitted["components"] is not None:
                arrays[f"{vocab}.components"] = fitted["components"]
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, backend: Backend) -> TfidfFeaturizer:
        self = cls(tuple(meta["vocabularies"]), meta["n_components"], seed=meta["seed"])
        self.fitted_ = {
            vocab: {"idf": backend.asarray(arrays[f"{vocab}.idf"]),
                    "components": backend.asarray(arrays[f"{vocab}.components"]) if f["reduced"] else None,
                    "categories": f["categories"]}
            for vocab, f in meta["fitted"].items()
        }
        return self
