"""Behaviour statistics per user: recency, frequency, monetary, event mix, activity span, sessions.

All of them are segment reductions over the event table, so they run where the table lives: CuPy on
a GPU (with or without cuDF), NumPy on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend, array_module
from gpuclust.features.normalise import Normaliser
from gpuclust.frames import array_frame, frame_local
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.segments import distinct_per_segment, run_starts, segment_first, segment_last, segment_sum

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass
class UserStatistics:
    """The statistics as one float32 matrix, a row per user_idx and a column per name, on the device of
    the event table: a matrix rather than a frame, so that on a GPU they stay there with or without cuDF.
    Every value is finite (values are finite after cleaning, every user has an event and a session)."""

    names: list[str]
    values: Any

    def column(self, name: str) -> Any:
        return self.values[:, self.names.index(name)]

    def frame(self, backend: Backend):
        """A frame of the backend's library, indexed by user_idx: for readers who want one (tests, notebooks)."""
        values = frame_local(self.values, backend)  # one copy to pandas' host, not one per column
        out = array_frame({name: values[:, j] for j, name in enumerate(self.names)}, backend)
        out.index.name = schema.USER_IDX
        return out


def behaviour_statistics(data: PreparedData, backend: Backend, session_gap_minutes: float = 30.0):
    """Unnormalised statistics, one row per user_idx: the behaviour feature and what cluster profiles report.

    Computed once per prepared log and gap (the explainer asks for them too), then kept on `data`."""
    key = ("behaviour_statistics", float(session_gap_minutes))
    if key not in data.cache:
        data.cache[key] = _statistics(data, backend, session_gap_minutes)
    return data.cache[key]


def _statistics(data: PreparedData, backend: Backend, session_gap_minutes: float) -> UserStatistics:
    return table_statistics(data.table, data.n_users, data.n_items, _ns(data.reference_time), data.event_types,
                            session_gap_minutes)


def table_statistics(t: EventTable, n_users: int, n_items: int, reference_ns: Any, types: Sequence[str],
                     session_gap_minutes: float, purchases_per_session: Any = True) -> UserStatistics:
    """Segment reductions over an event table (sorted by user, then time), on the device it lives on.

    `types`: the event types with a share column (those of the log); purchases per session is a column
    where purchase and another type are among them. `reference_ns` (recency is measured from it) and
    `purchases_per_session` (0 where False) may be one value or one per user: the service places several
    requests at once, each with its own latest event and its own types."""
    xp, n = t.xp, n_users
    users, offsets = t.user, t.offsets
    first = segment_first(t.time, offsets, 0, xp)
    last = segment_last(t.time, offsets, 0, xp)
    gap = int(session_gap_minutes * 60) * 1_000_000_000
    new_session = run_starts(users, xp=xp)
    new_session[1:] |= (t.time[1:] - t.time[:-1]) > gap
    day = t.time // NS_PER_DAY
    events = segment_sum(None, users, n, xp)
    sessions = segment_sum(new_session, users, n, xp)
    columns = {
        "recency_days": (reference_ns - last) / NS_PER_DAY,
        "span_days": (last - first) / NS_PER_DAY,
        "events": events,
        "sessions": sessions,
        "events_per_session": events / sessions,
        "active_days": segment_sum(run_starts(users, day, xp=xp), users, n, xp),
        "distinct_items": distinct_per_segment(users, t.item, n, n_items, xp).astype(xp.float64),
        "monetary": segment_sum(t.value, users, n, xp),
    }
    types = list(dict.fromkeys(types))
    n_types = len(t.event_names)  # one bincount for every type's count per user
    per_type = xp.bincount(users.astype(xp.int64) * n_types + t.event, minlength=n * n_types).reshape(n, n_types)
    counts = {name: per_type[:, t.event_names.index(name)].astype(xp.float64) for name in types}
    for name in types:
        columns[f"share_{name}"] = counts[name] / events
    if "purchase" in types and len(types) > 1:
        # An array condition: cupy.where calls condition.astype, which a Python bool (the default) lacks.
        wanted = xp.asarray(purchases_per_session, dtype=bool)
        columns["purchases_per_session"] = xp.where(wanted, counts["purchase"] / sessions, 0.0)
    # Sums are float64; one beyond float32 (many purchases near 3.4e38) is held at float32's largest value,
    # as the service holds it, rather than becoming infinite.
    top = float(np.finfo(np.float32).max)
    values = xp.stack([xp.clip(v, -top, top).astype(xp.float32) for v in columns.values()], axis=1)
    return UserStatistics(list(columns), values)


def _ns(timestamp: Any) -> int:
    import pandas as pd

    return int(pd.Timestamp(timestamp).value)


class BehaviourFeaturizer:
    """RFM-style statistics, normalised so counts and money do not dominate by scale."""

    name = "behaviour"

    def __init__(self, normalise: str = "log1p", session_gap_minutes: float = 30.0) -> None:
        self.normalise = normalise
        self.session_gap_minutes = session_gap_minutes

    def fit_transform(self, data: PreparedData, backend: Backend):
        raw = behaviour_statistics(data, backend, self.session_gap_minutes)
        self.names_ = list(raw.names)
        x = raw.values
        self.normaliser_ = Normaliser(self.normalise).fit(x, backend.xp)
        self.info_ = {"dims": len(self.names_), "columns": self.names_, "normalise": self.normalise}
        return self.normaliser_.transform(x, backend.xp)

    def transform(self, data: PreparedData, backend: Backend):
        """New users on the fitted scale; event types unseen at fit time are ignored."""
        return self.transform_statistics(behaviour_statistics(data, backend, self.session_gap_minutes), backend)

    def transform_statistics(self, raw: UserStatistics, backend: Backend):
        """`transform` from the raw statistics: the fitted columns (0 for a type the users lack), normalised."""
        xp = array_module(raw.values)
        zeros = xp.zeros(raw.values.shape[0], dtype=xp.float32)
        x = xp.stack([raw.column(name) if name in raw.names else zeros for name in self.names_], axis=1)
        return self.normaliser_.transform(backend.asarray(x), backend.xp)

    def state(self) -> tuple[dict, dict]:
        meta = {"normalise": self.normalise, "session_gap_minutes": self.session_gap_minutes, "names": self.names_}
        return meta, dict(self.normaliser_.params_)

    @classmethod
    def from_state(cls, meta: dict, arrays: dict, backend: Backend) -> BehaviourFeaturizer:
        self = cls(meta["normalise"], meta["session_gap_minutes"])
        self.names_ = list(meta["names"])
        self.normaliser_ = Normaliser(self.normalise)
        self.normaliser_.params_ = {k: backend.asarray(v) for k, v in arrays.items()}
        return self
