"""The event table: the one currency between preprocessing and the stages after it.

Each event is a row of integer codes and numbers on the backend's device (CuPy on CUDA, NumPy on the
CPU): user_idx, item_idx, event type code, int64 nanoseconds, float32 value and weight. Rows are sorted
once by (user, time), so `offsets[u]:offsets[u + 1]` are user u's events in time order, and a
group-by over users is a segment reduction (`gpuclust.segments`). Strings (ids, event type names) stay
in the small per-user, per-item and per-type tables beside it.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.segments import offsets_of

ARRAYS = ("user", "item", "event", "time", "value", "weight", "offsets")


class PicklesModuleByName:
    """A dataclass whose `xp` (the array module) pickles by name: a module object does not pickle, and
    Dask moves and spills partitions' tables and codes (which would fall back to cloudpickle, serialising
    the arrays twice)."""

    def __reduce__(self) -> tuple[Any, ...]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "xp"}  # type: ignore[arg-type]
        return _rebuilt, (type(self), values, self.xp.__name__)  # type: ignore[attr-defined]


def _rebuilt(cls: type, values: dict[str, Any], module: str) -> Any:
    return cls(**values, xp=importlib.import_module(module))


@dataclass(frozen=True)
class EventTable(PicklesModuleByName):
    user: Any  # int32 user_idx, ascending
    item: Any  # int32 item_idx
    event: Any  # int8 index into `event_names`
    time: Any  # int64 ns since the epoch, UTC; ascending within a user
    value: Any  # float32 money value, 0 where absent
    weight: Any  # float32 event weight
    offsets: Any  # int64, n_users + 1
    event_names: tuple[str, ...]  # what the event codes mean (the configured types, in config order)
    xp: ModuleType

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def on_host(self) -> EventTable:
        """The same table in NumPy arrays (each device array's copy counted), for work on the client."""
        from gpuclust.backend import to_host

        if self.xp is np:
            return self
        arrays = {name: to_host(getattr(self, name)) for name in ARRAYS}
        return EventTable(**arrays, event_names=self.event_names, xp=np)

    def subset(self, keep: Any) -> EventTable:
        """The rows where `keep` (a boolean mask) is true, in the same order: still sorted, new offsets."""
        user = self.user[keep]
        return EventTable(user, self.item[keep], self.event[keep], self.time[keep], self.value[keep],
                          self.weight[keep], offsets_of(user, self.n_users, self.xp), self.event_names, self.xp)

    @classmethod
    def from_frame(cls, events: Any, n_users: int, event_names: tuple[str, ...], xp: ModuleType) -> EventTable:
        """The table of a prepared frame (user_idx, item_idx, event_type, timestamp, value, weight), for
        PreparedData built from frames (Dask partitions, a holdout's training part, tests). Rows not
        already in (user, time) order are stably sorted."""
        from gpuclust.frames import host_frame, local_values
        from gpuclust.segments import stable_order

        def col(column: Any, dtype: Any) -> Any:
            return xp.asarray(local_values(column)).astype(dtype, copy=False)

        types = events[schema.EVENT].astype("str")
        found = host_frame(types.drop_duplicates().to_frame())[schema.EVENT].tolist()
        event_names = tuple(event_names) + tuple(sorted(set(found) - set(event_names)))  # every code >= 0
        codes = types.map({n: i for i, n in enumerate(event_names)})
        columns = {"user": col(events[schema.USER_IDX], np.int32), "item": col(events[schema.ITEM_IDX], np.int32),
                   "event": col(codes.fillna(-1).astype("int8"), np.int8),
                   "time": col(events[schema.TIME].astype("datetime64[ns]").astype("int64"), np.int64),
                   "value": col(events[schema.VALUE], np.float32), "weight": col(events[schema.WEIGHT], np.float32)}
        user, time = columns["user"], columns["time"]
        ordered = len(user) < 2 or bool(((user[1:] > user[:-1]) | ((user[1:] == user[:-1]) & (time[1:] >= time[:-1]))).all())
        if not ordered:
            order = stable_order(user, time, xp)
            columns = {name: values[order] for name, values in columns.items()}
        return cls(**columns, offsets=offsets_of(columns["user"], n_users, xp), event_names=tuple(event_names), xp=xp)

    def to_frame(self, users: Any, items: Any, frame: ModuleType) -> Any:
        """The prepared events as a frame, for the stages still written on frames: user_id, item_id,
        event_type (categorical over the configured types), timestamp (datetime64[ns]), value, weight,
        user_idx, item_idx. pandas frames take one counted copy of each column to the host."""
        from gpuclust.backend import to_host

        names = list(self.event_names)
        if frame.__name__ == "pandas":
            import pandas as pd

            user_idx, item_idx = to_host(self.user), to_host(self.item)
            event = pd.Categorical.from_codes(to_host(self.event).astype(np.int8), categories=names)
            time, value, weight = to_host(self.time), to_host(self.value), to_host(self.weight)
        else:  # cuDF: the columns stay on the device
            user_idx, item_idx, time, value, weight = self.user, self.item, self.time, self.value, self.weight
            event = frame.Series(names).take(self.event).astype(frame.CategoricalDtype(categories=names))
        return frame.DataFrame({
            schema.USER: users[schema.USER].take(user_idx).reset_index(drop=True),
            schema.ITEM: items[schema.ITEM].take(item_idx).reset_index(drop=True),
            schema.EVENT: event,
            schema.TIME: frame.Series(time).astype("datetime64[ns]"),
            schema.VALUE: value, schema.WEIGHT: weight, schema.USER_IDX: user_idx, schema.ITEM_IDX: item_idx,
        })
