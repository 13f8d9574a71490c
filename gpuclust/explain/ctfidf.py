"""Class-based TF-IDF (the BERTopic c-TF-IDF idea): the words that set one cluster apart.

Each cluster is treated as one document made of the item texts its users touched, each touch counted
with its event weight. For cluster c and term t:

    tf(t, c) = weighted count of t in c / total weighted count in c
    idf(t)   = log(1 + A / f_t),  A = average total per cluster, f_t = count of t over all clusters

so a term scores high where it is frequent in the cluster and rare elsewhere. The same is done with
item categories as whole terms. The events -> (cluster, item) aggregation runs on the events' own frame
library (cuDF or pandas); only that k x items summary and the small item catalogue reach the host,
where texts are tokenised (catalogues are far smaller than event logs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp

from gpuclust import schema
from gpuclust.backend import array_module
from gpuclust.errors import UsageError
from gpuclust.explain.behaviour_words import lead_label
from gpuclust.explain.profiles import CLUSTER, cluster_item_weights
from gpuclust.frames import host_frame
from gpuclust.preprocess.prepared import PreparedData

LABEL_SEPARATOR = " · "
# Two adjacent words are one phrase in a cluster when the pair makes up this much of either word's uses.
PHRASE_SHARE = 0.5
_WORD = re.compile(r"\w[\w'&+-]*\w|\w")
_CLAUSE = re.compile(r"[,;:/|()\[\]]")  # words either side of these are no phrase


def english_stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def tokenize(text: str, stop_words: frozenset[str], min_length: int = 2,
             seen: dict[str, str | None] | None = None) -> list[str]:
    """Lowercase words of at least `min_length` characters with a letter in them, stop-words dropped.

    Hyphenated words ("t-shirt", "v-neck") stay whole: split, they lose what they mean. `seen` remembers
    each raw word's verdict across calls (a catalogue's titles reuse few words; the tests per word were
    most of the time)."""
    seen = {} if seen is None else seen
    out = []
    for raw in _WORD.findall(str(text).lower()):
        if raw not in seen:
            token = raw.strip("'&+-")
            keep = len(token) >= min_length and token not in stop_words and not token.replace("-", "").isdigit() \
                and any(ch.isalpha() for ch in token)
            seen[raw] = token if keep else None
        token = seen[raw]
        if token is not None:
            out.append(token)
    return out


def ngrams(tokens: list[str], ngram_range: tuple[int, int]) -> list[str]:
    low, high = ngram_range
    out = []
    for n in range(low, high + 1):
        out.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return out


def readable_label(terms: Iterable[str], n_terms: int = 3) -> str:
    """Up to `n_terms` distinct terms, none a substring of another ("wool · scarf · knit")."""
    chosen: list[str] = []
    for term in terms:
        term = str(term).strip()
        if not term or any(term in kept or kept in term for kept in chosen):
            continue
        chosen.append(term)
        if len(chosen) == n_terms:
            break
    return LABEL_SEPARATOR.join(chosen)


class ClassTfidf:
    """Top distinctive terms and categories per cluster, and a short readable label from them.

    Parameters are stored as given; `fit(data, labels)` sets `terms_`, `categories_`, `labels_`
    ({cluster: ...}) and `vocabulary_size_`. Labels are an int array indexed by user_idx on NumPy or
    CuPy (cheapest where the events frame keeps its data); users labelled -1 (noise) are left out.
    """

    def __init__(self, top_n: int = 8, ngram_range: tuple[int, int] = (1, 1), stop_words: Iterable[str] | None = None,
                 min_token_length: int = 2, label_terms: int = 3, reduce_frequent_words: bool = False) -> None:
        self.top_n = top_n
        self.ngram_range = ngram_range
        self.stop_words = stop_words
        self.min_token_length = min_token_length
        self.label_terms = label_terms
        self.reduce_frequent_words = reduce_frequent_words

    def fit(self, data: PreparedData, labels: Any) -> ClassTfidf:
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise UsageError(f"ngram_range must be (low, high) with 1 <= low <= high, got {self.ngram_range}")
        if self.top_n < 1:
            raise UsageError(f"top_n must be at least 1, got {self.top_n}")
        if len(labels) != data.n_users:
            raise UsageError(f"labels has {len(labels)} entries but the data has {data.n_users} users")

        per_item, clusters = self._cluster_item_weights(data, labels)
        return self.fit_weights(per_item, clusters, data)

    def fit_weights(self, per_item: sp.csr_matrix, clusters: list[int], data: PreparedData) -> ClassTfidf:
        """c-TF-IDF from the weighted (cluster x item_idx) sums `fit` aggregates from the events; `data`
        supplies the catalogue only (items, text columns, n_items)."""
        self.clusters_ = clusters
        items = self._catalogue(data)
        terms, names = self._term_matrix(items, data.n_items)
        self._word_counts = (per_item @ self._words[0]).tocsr()  # clusters x words: phrase detection
        self._pair_counts = (per_item @ self._pairs[0]).tocsr()
        # Unigram terms are the words: their cluster counts are the ones just made, not a second product.
        self.terms_ = self._score(self._word_counts if terms is self._words[0] else per_item @ terms, names, clusters)
        self._word_index = {w: j for j, w in enumerate(self._words[1])}
        self._pair_index = {w: j for j, w in enumerate(self._pairs[1])}
        self.categories_ = {c: [] for c in clusters}
        if schema.CATEGORY in items.columns:
            categories, names = _category_matrix(items, data.n_items)
            self.categories_ = self._score(per_item @ categories, names, clusters)
        self.labels_ = {c: self._label(c) for c in clusters}
        return self

    def annotate(self, profiles: list[dict]) -> list[dict]:
        """Profiles (as ClusterProfiler makes them) with `label`, `label_driver`, `terms` and
        `ctfidf_categories` added. A cluster whose behaviour sets it apart more than its items is labelled
        by that behaviour first (`behaviour_words.lead_label`); `label_driver` says which led."""
        out = []
        for profile in profiles:
            c = int(profile["cluster"])
            label, driver = lead_label(profile, self._label_terms(c), LABEL_SEPARATOR) if c >= 0 else ("", None)
            out.append({
                **profile,
                "label": label or self.labels_.get(c, ""),
                "label_driver": driver,
                "terms": [{"term": t, "score": s} for t, s in self.terms_.get(c, [])],
                "ctfidf_categories": [{"category": t, "score": s} for t, s in self.categories_.get(c, [])],
            })
        return out

    # --- steps ------------------------------------------------------------------------------

    def _cluster_item_weights(self, data: PreparedData, labels: Any) -> tuple[sp.csr_matrix, list[int]]:
        """Weighted events per (cluster, item) on the events' frame library; the summary comes to the host."""
        summary = cluster_item_weights(data, labels)
        summary = summary[summary[CLUSTER] >= 0]
        k = int(array_module(labels).asarray(labels).max()) + 1 if len(labels) else 0
        matrix = sp.csr_matrix(
            (summary[schema.WEIGHT].to_numpy(np.float64),
             (summary[CLUSTER].to_numpy(np.int64), summary[schema.ITEM_IDX].to_numpy(np.int64))),
            shape=(max(k, 0), data.n_items),
        )
        return matrix, list(range(k))

    def _catalogue(self, data: PreparedData):
        """The item catalogue on the host, one row per item_idx."""
        columns = [schema.ITEM_IDX, *[c for c in data.text_columns if c in data.items.columns]]
        if data.has_categories:
            columns.append(schema.CATEGORY)
        return host_frame(data.items[columns]).sort_values(schema.ITEM_IDX).reset_index(drop=True)

    def _term_matrix(self, items, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
        """items x terms counts from the joined text columns; the items x words and items x adjacent word
        pairs counts are kept too (`_words`, `_pairs`), for telling phrases in labels."""
        text_cols = [c for c in items.columns if c not in (schema.ITEM_IDX, schema.CATEGORY)]
        stop = english_stop_words() if self.stop_words is None else frozenset(w.lower() for w in self.stop_words)
        unigrams = tuple(self.ngram_range) == (1, 1)
        terms, words, pairs = _Counts(), _Counts(), _Counts()
        seen: dict[str, str | None] = {}
        if text_cols:
            texts = items[text_cols[0]].astype("string").fillna("")
            for col in text_cols[1:]:
                texts = texts + " " + items[col].astype("string").fillna("")
            for item_idx, text in zip(items[schema.ITEM_IDX].to_numpy(), texts.to_numpy(), strict=True):
                clauses = [tokenize(clause, stop, self.min_token_length, seen) for clause in _CLAUSE.split(str(text))]
                tokens = [token for clause in clauses for token in clause]
                words.add(item_idx, tokens)
                pairs.add(item_idx, [pair for clause in clauses for pair in ngrams(clause, (2, 2))])
                if not unigrams:
                    terms.add(item_idx, ngrams(tokens, self.ngram_range))
        self._words, self._pairs = words.matrix(n_items), pairs.matrix(n_items)
        matrix = self._words if unigrams else terms.matrix(n_items)
        self.vocabulary_size_ = len(matrix[1])
        return matrix

    def _score(self, cluster_counts: sp.spmatrix, names: np.ndarray,
               clusters: list[int]) -> dict[int, list[tuple[str, float]]]:
        """The top terms of each cluster from its weighted term counts (clusters x terms)."""
        out: dict[int, list[tuple[str, float]]] = {c: [] for c in clusters}
        if cluster_counts.shape[1] == 0 or not clusters:
            return out
        counts = np.asarray(cluster_counts.todense(), dtype=np.float64)  # k x terms
        totals = counts.sum(axis=1, keepdims=True)
        present = totals[:, 0] > 0
        if not present.any():
            return out
        tf = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        if self.reduce_frequent_words:  # BERTopic's option: sqrt(tf) damps words every cluster uses a lot
            tf = np.sqrt(tf)
        avg = totals[present].mean()
        freq = counts.sum(axis=0)
        idf = np.log1p(np.divide(avg, freq, out=np.zeros_like(freq), where=freq > 0))
        scores = tf * idf
        for c in clusters:
            row = scores[c]
            top = np.argsort(-row, kind="stable")[: self.top_n]
            out[c] = [(str(names[j]), round(float(row[j]), 6)) for j in top if row[j] > 0]
        return out

    def _label_terms(self, c: int) -> list[str]:
        """The label's terms: top terms, adjacent words that form a phrase in the cluster's titles joined."""
        terms = phrase_terms((t for t, _ in self.terms_.get(c, [])), lambda a, b: self._is_phrase(c, a, b),
                             self.label_terms)
        if not terms:  # no text: whole categories, which are single terms already
            fallback = readable_label((t for t, _ in self.categories_.get(c, [])), self.label_terms)
            terms = fallback.split(LABEL_SEPARATOR) if fallback else []
        return terms

    def _label(self, c: int) -> str:
        return LABEL_SEPARATOR.join(self._label_terms(c)) or f"cluster {c}"

    def _is_phrase(self, c: int, first: str, second: str) -> bool:
        """`first second` reads as one phrase in cluster c's item texts: the pair, adjacent and in that
        order, makes up at least PHRASE_SHARE of each word's weighted occurrences there (so a word that
        appears once beside a common one does not glue onto it)."""
        j = self._pair_index.get(f"{first} {second}")
        if j is None:
            return False
        a, b = self._word_index.get(first), self._word_index.get(second)
        if a is None or b is None:
            return False
        commoner = max(self._word_counts[c, a], self._word_counts[c, b])
        return commoner > 0 and self._pair_counts[c, j] >= PHRASE_SHARE * commoner


class _Counts:
    """COO rows of an items x vocabulary count matrix, built one item at a time."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.rows: list[int] = []
        self.cols: list[int] = []

    def add(self, item_idx: int, terms: list[str]) -> None:
        for term in terms:
            self.rows.append(item_idx)
            self.cols.append(self.vocab.setdefault(term, len(self.vocab)))

    def matrix(self, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
        counts = sp.csr_matrix((np.ones(len(self.rows)), (np.asarray(self.rows, np.int64),
                                                          np.asarray(self.cols, np.int64))),
                               shape=(n_items, len(self.vocab)))
        return counts, np.asarray(list(self.vocab), dtype=object)


def phrase_terms(terms: Iterable[str], is_phrase, n_terms: int = 3, max_words: int = 3) -> list[str]:
    """Up to `n_terms` label terms from ranked terms: a term sharing a word with a kept one is skipped,
    and a word that `is_phrase` with a kept term's first or last word joins it ("olive", "oil" -> "olive oil").
    Terms ranked below a full label may still complete a phrase in it."""
    chosen: list[list[str]] = []
    for term in terms:
        words = str(term).split()
        if not words or any(set(words) & set(kept) for kept in chosen):
            continue
        for kept in chosen:
            if len(kept) + len(words) > max_words:
                continue
            if is_phrase(kept[-1], words[0]):
                kept.extend(words)
                break
            if is_phrase(words[-1], kept[0]):
                kept[:0] = words
                break
        else:
            if len(chosen) < n_terms:
                chosen.append(words)
    return [" ".join(words) for words in chosen]


def _category_matrix(items, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """items x categories one-hot: each category is a single term."""
    known = items[items[schema.CATEGORY].notna()]
    cats = known[schema.CATEGORY].astype("str").to_numpy()
    names, codes = np.unique(cats, return_inverse=True)
    matrix = sp.csr_matrix((np.ones(len(codes)), (known[schema.ITEM_IDX].to_numpy(np.int64), codes)),
                           shape=(n_items, len(names)))
    return matrix, names.astype(object)

