"""`UserClusterer.predict` for a few users at a time, on small arrays instead of frames.

A request of one user through `predict` spends milliseconds in pandas (cleaning steps, group-bys,
merges) to produce a handful of numbers. `FastAssigner` does the same steps with the same rules on
NumPy/SciPy arrays: predict's preprocessing (known event types, exact duplicates, the minimum events
per user, items of the model's vocabulary, the reference time of the request's latest event), then
the fitted featurisers' own code on the batch's arrays (the behaviour statistics of its event table,
`features.behaviour.table_statistics`; TF-IDF from its sparse counts, `TfidfFeaturizer.transform_counts`;
text pooling of the fitted item vectors), the fuser, the reducer, the nearest centre and the anomaly
score. The dense steps run on the model's backend (CuPy on a GPU when the model was loaded there).

Several requests are placed in one pass (`place`); each keeps its own reference time and its own
event-type rule, so a user's result never depends on who else was in the batch: it is what `predict`
gives for that request alone. A featuriser without a fast path here (user-mode text, a featuriser of
your own) makes the whole model use `predict` per request instead; `fallback` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend, cpu_backend, to_host
from gpuclust.cluster.outcome import nearest_centres
from gpuclust.features.behaviour import table_statistics
from gpuclust.features.text.pooling import decay_weights, pool_users
from gpuclust.features.tfidf import catalogue_category_codes
from gpuclust.frames import host_frame
from gpuclust.preprocess.clean import duplicate_rows
from gpuclust.preprocess.parse import canonical_id
from gpuclust.preprocess.table import EventTable
from gpuclust.privacy import Pseudonymiser
from gpuclust.quality.anomaly import scores_against
from gpuclust.quality.drift import DriftCounts
from gpuclust.segments import offsets_of, stable_order
from gpuclust.serve.events import EventColumns

NO_KNOWN_TYPE = "no event of a type the model knows"
NO_KNOWN_ITEM = "no event on an item the model knows"
MAX_MIN_USER_EVENTS = 1_000_000  # far above any request's events (--max-events is 200,000 by default)
MAX_SESSION_GAP_MINUTES = 100 * 366 * 24 * 60  # a gap in ns must stay well inside int64


@dataclass
class Prepared:
    """One request after predict's preprocessing: the placeable users and their events."""

    user_ids: list[Any]  # distinct user ids as given, in order of first appearance
    keys: list[str]  # the same users as the model knows them: pseudonyms where it is private
    placed: np.ndarray  # positions (into user_ids) of the users that have events left, ascending
    user: np.ndarray  # per kept event: row in `placed`
    item: np.ndarray  # item_idx (int64)
    weight: np.ndarray  # event-type weight (float32)
    etype: np.ndarray  # index into the model's event types
    ts: np.ndarray  # int64 ns
    value: np.ndarray  # float32
    ref_ns: int  # the request's latest kept event: recency and decay are measured from it
    purchases_per_session: bool  # predict computes that statistic only when purchase and another type occur
    dropped: dict[int, str] = field(default_factory=dict)  # position -> why the user cannot be placed
    counts: DriftCounts = field(default_factory=DriftCounts)  # events read, unknown items and types
    position: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # per kept event: its user's position

    @property
    def n_placed(self) -> int:
        return int(self.placed.shape[0])


@dataclass
class Placement:
    """Per placed user of one request (rows follow `Prepared.placed`)."""

    cluster: np.ndarray
    distance: np.ndarray
    anomaly_score: np.ndarray


class FastAssigner:
    """Built once per loaded model; `prepare` one request, `place` a list of prepared requests."""

    def __init__(self, estimator: Any) -> None:
        self.est = estimator
        # The model's backend: NumPy/SciPy, or CuPy/cupyx where it was loaded on a GPU.
        self.backend = estimator.backend_
        cfg = estimator.config_.preprocess
        self.types = list(cfg.event_weights)
        self.type_code = {t: i for i, t in enumerate(self.types)}
        self.type_weight = np.asarray(list(cfg.event_weights.values()), dtype=np.float32)
        self.purchase = self.type_code.get("purchase", -1)
        self.drop_duplicates = cfg.drop_duplicates
        self.min_user_events, self.gap_minutes = _checked_preprocess(cfg)
        vocab = host_frame(estimator.vocabulary_)
        self.vocabulary = vocab
        self.n_items = len(vocab)
        self.item_index = {canonical_id(v): int(i) for v, i in zip(vocab[schema.ITEM], vocab[schema.ITEM_IDX],
                                                                     strict=True)}
        self.category_codes = self._category_codes(vocab)
        self.fallback = self._why_not_fast()

    # --- what can go fast ------------------------------------------------------------------------

    def _why_not_fast(self) -> str | None:
        for f in self.est.featurizers_:
            name = type(f).__name__
            if name == "TextFeaturizer" and (f.mode != "item" or getattr(f, "item_vectors_", None) is None):
                return "the text feature re-encodes each user's text (user mode): requests run predict()"
            if name not in ("BehaviourFeaturizer", "TfidfFeaturizer", "TextFeaturizer"):
                return f"featuriser {f.name!r} has no fast path: requests run predict()"
        return None

    def _category_codes(self, vocab) -> dict[str, np.ndarray]:
        host = cpu_backend()  # the codes index host arrays of a request
        return {f.name: catalogue_category_codes(vocab, f.fitted_["category"]["categories"], host).astype(np.int64)
                for f in self.est.featurizers_
                if type(f).__name__ == "TfidfFeaturizer" and "category" in getattr(f, "fitted_", {})
                and schema.CATEGORY in vocab.columns}

    # --- one request: predict's preprocessing ------------------------------------------------------

    def prepare(self, events: EventColumns, pseudonymiser: Pseudonymiser | None = None) -> Prepared:
        n = len(events)
        position: dict[str, int] = {}
        user_ids: list[Any] = []
        user = np.empty(n, dtype=np.int64)
        for i, (key, raw) in enumerate(zip(_canonical(events.user), events.user, strict=True)):
            p = position.get(key)
            if p is None:
                p = position[key] = len(user_ids)
                user_ids.append(raw)
            user[i] = p
        keys = list(position)
        if pseudonymiser is not None:  # only pseudonyms go further (one per user; nothing else needs them)
            keys = [pseudonymiser.one(k) for k in keys]
        codes = self.type_code
        etype = np.fromiter((codes.get(t, -1) for t in events.event_type), dtype=np.int64, count=n)
        unknown: dict[str, int] = {}  # items outside the vocabulary: -1, -2, ... (still distinct for duplicates)
        index = self.item_index
        item = np.fromiter((index[k] if k in index else -1 - unknown.setdefault(k, len(unknown))
                            for k in _canonical(events.item)), dtype=np.int64, count=n)
        ts, value = events.ts_ns, events.value
        counts = DriftCounts(events=n, unknown_event_types=int((etype < 0).sum()))

        kept = np.flatnonzero(etype >= 0)
        if self.drop_duplicates and kept.size > 1:  # the first of identical rows stays: the batch's own rule
            rows = kept[stable_order(user[kept], ts[kept], np)]
            duplicate = duplicate_rows(user[rows], ts[rows], item[rows], etype[rows], value[rows], np)
            if duplicate.any():
                kept = np.sort(rows[~duplicate])
        per_user = np.bincount(user[kept], minlength=len(user_ids))
        # Every user with a readable event is placed, as `predict` places them (whatever min_user_events
        # the fit used: that filter chose whom to learn from, not whom to serve).
        dropped = {int(p): NO_KNOWN_TYPE for p in np.flatnonzero(per_user == 0)}
        present = set(etype[kept].tolist())
        pps = self.purchase in present and len(present) > 1
        on_known = item[kept] >= 0
        counts.unknown_items = int((~on_known).sum())
        kept = kept[on_known]
        left = np.bincount(user[kept], minlength=len(user_ids))
        placed = np.flatnonzero(left > 0)
        for p in np.flatnonzero((per_user > 0) & (left == 0)).tolist():
            dropped.setdefault(p, NO_KNOWN_ITEM)
        row = np.full(len(user_ids), -1, dtype=np.int64)
        row[placed] = np.arange(placed.shape[0])
        kept_types = etype[kept]
        type_counts = np.bincount(kept_types, minlength=len(self.types))
        counts.event_types = {t: int(type_counts[i]) for i, t in enumerate(self.types) if type_counts[i]}
        return Prepared(user_ids, keys, placed, row[user[kept]], item[kept], self.type_weight[kept_types], kept_types,
                        ts[kept], value[kept], int(ts[kept].max()) if kept.size else 0, pps, dropped, counts,
                        user[kept])

    # --- a batch of requests -------------------------------------------------------------------------

    def place(self, batch: list[Prepared]) -> list[Placement]:
        """Place every prepared request of `batch` in one pass through the featurisers."""
        sizes = [p.n_placed for p in batch]
        total = int(sum(sizes))
        if total == 0:
            return [_empty() for _ in batch]
        offsets = np.cumsum([0, *sizes])[:-1]
        user = np.concatenate([p.user + o for p, o in zip(batch, offsets, strict=True)])
        cols = {name: np.concatenate([getattr(p, name) for p in batch])
                for name in ("item", "weight", "etype", "ts", "value")}
        ref = np.repeat(np.asarray([p.ref_ns for p in batch], dtype=np.int64), sizes)
        pps = np.repeat(np.asarray([p.purchases_per_session for p in batch]), sizes)
        backend, xp = self.backend, self.backend.xp
        blocks = {}
        for f in self.est.featurizers_:
            kind = type(f).__name__
            if kind == "BehaviourFeaturizer":
                blocks[f.name] = self._behaviour(f, total, user, cols, ref, pps)
            elif kind == "TfidfFeaturizer":
                blocks[f.name] = self._tfidf(f, total, user, cols)
            else:
                blocks[f.name] = self._text(f, total, user, cols, ref)
        x = self.est.fuser_.transform(blocks, xp)
        if self.est.reducer_ is not None:
            x = self.est.reducer_.transform(x, backend)
        labels, distances = nearest_centres(x, self.est.cluster_centers_, xp)
        scores = scores_against(labels, distances, *self.est.spread_, xp)
        labels, distances, scores = to_host(labels), to_host(distances), to_host(scores)
        return [Placement(labels[o:o + s], distances[o:o + s], scores[o:o + s])
                for o, s in zip(offsets, sizes, strict=True)]

    def _behaviour(self, f: Any, n_users: int, user: np.ndarray, cols: dict[str, np.ndarray], ref: np.ndarray,
                   pps: np.ndarray) -> Any:
        """features.behaviour's statistics of the batch's event table (on the host: requests are small),
        each user measured from its own request's latest event and with its request's types."""
        order = stable_order(user, cols["ts"], np)
        u = user[order]
        table = EventTable(u.astype(np.int32), cols["item"][order].astype(np.int32), cols["etype"][order].astype(np.int8),
                           cols["ts"][order], cols["value"][order], cols["weight"][order], offsets_of(u, n_users, np),
                           tuple(self.types), np)
        raw = table_statistics(table, n_users, self.n_items, ref, self.types, self.gap_minutes, pps)
        return f.transform_statistics(raw, self.backend)

    def _tfidf(self, f: Any, n_users: int, user: np.ndarray, cols: dict[str, np.ndarray]):
        counts = {}
        for vocab, fitted in f.fitted_.items():
            rows, columns, weights = user, cols["item"], cols["weight"]
            n_cols = self.n_items
            if vocab == "category":
                columns = self.category_codes[f.name][columns]
                keep = columns >= 0
                rows, columns, weights = rows[keep], columns[keep], weights[keep]
                n_cols = len(fitted["categories"])
            counts[vocab] = _coo(self.backend, weights, rows, columns, (n_users, n_cols))
        return f.transform_counts(counts, self.backend)

    def _text(self, f: Any, n_users: int, user: np.ndarray, cols: dict[str, np.ndarray], ref: np.ndarray):
        backend = self.backend
        weights = cols["weight"]
        if f.half_life_days is not None:
            weights = weights * decay_weights(ref[user] - cols["ts"], f.half_life_days, np)
        matrix = _coo(backend, weights, user, cols["item"], (n_users, self.n_items)).tocsr()
        return pool_users(matrix, f.item_vectors_, backend)


    def predict_request(self, events: EventColumns, prepared: Prepared) -> Placement:
        """The slow way, for models without a fast path: `predict` on a frame of the request's events."""
        import pandas as pd

        from gpuclust.errors import UsageError

        frame = pd.DataFrame({schema.USER: pd.Series(events.user, dtype=object),
                              schema.ITEM: pd.Series(events.item, dtype=object),
                              schema.EVENT: pd.Series(events.event_type, dtype=object),
                              schema.TIME: pd.to_datetime(events.ts_ns, unit="ns"), schema.VALUE: events.value})
        try:
            placed = self.est.predict(frame)
        except UsageError:  # nothing left to place
            prepared.placed = np.empty(0, dtype=np.int64)
            return _empty()
        position = {key: i for i, key in enumerate(prepared.keys)}
        rows = np.asarray([position.get(canonical_id(u), -1) for u in placed[schema.USER]], dtype=np.int64)
        keep = rows >= 0
        order = np.argsort(rows[keep], kind="stable")
        prepared.placed = rows[keep][order]
        for p in set(range(len(prepared.user_ids))) - set(prepared.placed.tolist()):
            prepared.dropped.setdefault(p, "not placed by predict()")
        pick = lambda name, dtype: placed[name].to_numpy(dtype)[keep][order]  # noqa: E731
        return Placement(pick("cluster", np.int32), pick("distance", np.float32), pick("anomaly_score", np.float32))


def _checked_preprocess(cfg: Any) -> tuple[int, float]:
    """The model's minimum events per user and session gap (minutes), refused when a saved model carries
    values no config would pass (a model edited and its checksums recomputed): a reload must refuse
    it, not fail on the first request or allocate for 1e11 made-up events."""
    from gpuclust.errors import UsageError

    minimum, gap = cfg.min_user_events, cfg.session_gap_minutes
    if isinstance(minimum, bool) or not isinstance(minimum, int | float) or not float(minimum).is_integer() \
            or not 1 <= minimum <= MAX_MIN_USER_EVENTS:
        raise UsageError(f"the model's min_user_events must be an integer from 1 to {MAX_MIN_USER_EVENTS:,}, "
                         f"got {str(minimum)[:40]}")
    if isinstance(gap, bool) or not isinstance(gap, int | float) or not 0 < gap <= MAX_SESSION_GAP_MINUTES:
        raise UsageError(f"the model's session_gap_minutes must be above 0 and at most {MAX_SESSION_GAP_MINUTES:,}"
                         f" (100 years), got {str(gap)[:40]}")
    return int(minimum), gap


def _canonical(values: list[Any]) -> list[str]:
    """`parse.canonical_id` of each value; integers and text, the usual ids, without a call per value."""
    kinds = set(map(type, values))
    if kinds <= {str}:
        return values
    if kinds <= {int}:
        return list(map(str, values))
    return [canonical_id(v) for v in values]


def _empty() -> Placement:
    return Placement(np.empty(0, np.int32), np.empty(0, np.float32), np.empty(0, np.float32))


def _coo(backend: Backend, values: Any, rows: Any, columns: Any, shape: tuple[int, int]) -> Any:
    """A float32 sparse matrix on the model's backend (SciPy, or cupyx where it was loaded on a GPU)."""
    return backend.sparse.coo_matrix(
        (backend.asarray(values, dtype=np.float32), (backend.asarray(rows), backend.asarray(columns))),
        shape=shape, dtype=backend.xp.float32)
