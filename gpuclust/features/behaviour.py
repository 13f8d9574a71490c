"""Behaviour statistics per user: recency, frequency, monetary, event mix, activity span, sessions.

All aggregations are frame group-bys, so they run in cuDF on the GPU and pandas on the CPU.
"""

from __future__ import annotations

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend
from gpuclust.features.normalise import Normaliser
from gpuclust.frames import frame_array
from gpuclust.preprocess.prepared import PreparedData

DAY = np.timedelta64(1, "D")


def behaviour_statistics(data: PreparedData, backend: Backend, session_gap_minutes: float = 30.0):
    """Unnormalised statistics, one row per user_idx: the behaviour feature and what cluster profiles report.

    Computed once per prepared log and gap (the explainer asks for them too), then kept on `data`."""
    key = ("behaviour_statistics", float(session_gap_minutes))
    if key not in data.cache:
        data.cache[key] = _statistics(data, backend, session_gap_minutes)
    return data.cache[key]


def _statistics(data: PreparedData, backend: Backend, session_gap_minutes: float):
    ev = data.events  # sorted by user_idx, timestamp
    ts = ev[schema.TIME]
    uid = ev[schema.USER_IDX]
    gap = np.timedelta64(int(session_gap_minutes * 60), "s")
    # No null may reach the count: in cuDF the null that shift leaves in row 0 makes a comparison null,
    # `|` keeps it, and the group-by sum skips it, so a one-session user would count 0 sessions.
    new_user = uid != uid.shift(1, fill_value=-1)  # user_idx >= 0: row 0 always starts a user
    long_gap = ((ts - ts.shift(1)) > gap).fillna(True)  # no earlier event: a new session
    new_session = new_user | long_gap

    work = ev[[schema.USER_IDX, schema.ITEM_IDX, schema.TIME, schema.VALUE]].copy()
    work["sessions"] = new_session.astype("int32")
    work["day"] = ts.dt.floor("D")
    types = list(dict.fromkeys(data.event_types))
    for t in types:
        work[f"n_{t}"] = (ev[schema.EVENT] == t).astype("float32")

    grouped = work.groupby(schema.USER_IDX)
    agg = grouped.agg({
        schema.TIME: ["min", "max", "count"],
        schema.VALUE: "sum",
        schema.ITEM_IDX: "nunique",
        "sessions": "sum",
        "day": "nunique",
        **{f"n_{t}": "sum" for t in types},
    })
    agg.columns = ["first", "last", "events", "monetary", "distinct_items", "sessions", "active_days",
                   *[f"n_{t}" for t in types]]
    agg = agg.sort_index()

    out = backend.frame.DataFrame(index=agg.index)
    out["recency_days"] = (data.reference_time - agg["last"]) / DAY
    out["span_days"] = (agg["last"] - agg["first"]) / DAY
    out["events"] = agg["events"].astype("float32")
    out["sessions"] = agg["sessions"].astype("float32")
    out["events_per_session"] = out["events"] / out["sessions"]
    out["active_days"] = agg["active_days"].astype("float32")
    out["distinct_items"] = agg["distinct_items"].astype("float32")
    out["monetary"] = agg["monetary"].astype("float32")
    for t in types:
        out[f"share_{t}"] = agg[f"n_{t}"] / out["events"]
    if "purchase" in types and len(types) > 1:
        out["purchases_per_session"] = agg["n_purchase"] / out["sessions"]
    return out.astype("float32")


class BehaviourFeaturizer:
    """RFM-style statistics, normalised so counts and money do not dominate by scale."""

    name = "behaviour"

    def __init__(self, normalise: str = "log1p", session_gap_minutes: float = 30.0) -> None:
        self.normalise = normalise
        self.session_gap_minutes = session_gap_minutes

    def fit_transform(self, data: PreparedData, backend: Backend):
        raw = behaviour_statistics(data, backend, self.session_gap_minutes)
        self.names_ = [str(c) for c in raw.columns]
        x = frame_array(raw, backend)
        self.normaliser_ = Normaliser(self.normalise).fit(x, backend.xp)
        self.info_ = {"dims": len(self.names_), "columns": self.names_, "normalise": self.normalise}
        return self.normaliser_.transform(x, backend.xp)

    def transform(self, data: PreparedData, backend: Backend):
        """New users on the fitted scale; event types unseen at fit time are ignored."""
        raw = behaviour_statistics(data, backend, self.session_gap_minutes)
        missing = [name for name in self.names_ if name not in raw.columns]
        if missing:
            raw = raw.copy()  # the cached statistics stay as computed
            for name in missing:
                raw[name] = 0.0
        return self.normaliser_.transform(frame_array(raw[self.names_], backend), backend.xp)

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
