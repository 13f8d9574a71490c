"""Events as integer codes: where preprocessing leaves frames behind.

Once ids are normalised, timestamps parsed and event types known, every event becomes a row of codes
(user and item ids factorised in sorted order, the event type's index, int64 nanoseconds, float32
value) on the backend's device. Duplicate removal, the minimum-count filters and sampling then run on
arrays; the distinct ids stay in two small tables beside them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.backend import Backend
from gpuclust.frames import factorize, local_values
from gpuclust.preprocess.table import EventTable, PicklesModuleByName

ARRAYS = ("user", "item", "event", "time", "value")


@dataclass(frozen=True)
class EventCodes(PicklesModuleByName):
    user: Any  # int64 index into user_ids
    item: Any  # int64 index into item_ids
    event: Any  # int8 index into the configured event types
    time: Any  # int64 ns, UTC
    value: Any  # float32
    user_ids: Any  # the distinct user ids, sorted (a Series of the frame library)
    item_ids: Any  # the distinct item ids, sorted
    xp: ModuleType

    @classmethod
    def of(cls, ev: Any, backend: Backend) -> EventCodes:
        """Codes of a cleaned frame whose event_type is categorical over the configured types. The arrays
        move to the backend's device here, once (CuPy where the frames are pandas on a GPU)."""
        user, user_ids = factorize(ev[schema.USER], backend)
        item, item_ids = factorize(ev[schema.ITEM], backend)
        event = local_values(ev[schema.EVENT].cat.codes)
        time = local_values(ev[schema.TIME].astype("datetime64[ns]").astype("int64"))
        value = local_values(ev[schema.VALUE])
        xp = backend.xp
        arrays = {"user": user.astype(np.int64, copy=False), "item": item.astype(np.int64, copy=False),
                  "event": event.astype(np.int8, copy=False), "time": time, "value": value.astype(np.float32, copy=False)}
        return cls(**{name: xp.asarray(a) for name, a in arrays.items()}, user_ids=user_ids, item_ids=item_ids, xp=xp)

    @classmethod
    def of_table(cls, table: EventTable, user_ids: Any, item_ids: Any, backend: Backend) -> EventCodes:
        """Codes of an event table (`EventTable`) whose user_idx and item_idx index `user_ids` and
        `item_ids` (the prepared users' and items' ids, in index order: sorted, as `of` factorises them).
        Event codes stay the table's (indices into its `event_names`)."""
        xp = backend.xp
        return cls(user=xp.asarray(table.user).astype(xp.int64), item=xp.asarray(table.item).astype(xp.int64),
                   event=xp.asarray(table.event).astype(xp.int8, copy=False),
                   time=xp.asarray(table.time).astype(xp.int64, copy=False),
                   value=xp.asarray(table.value).astype(xp.float32, copy=False), user_ids=user_ids.reset_index(drop=True),
                   item_ids=item_ids.reset_index(drop=True), xp=xp)

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, rows: Any) -> EventCodes:
        """The rows at `rows` (indices or a boolean mask); the id tables stay as they are."""
        return dataclasses.replace(self, **{name: getattr(self, name)[rows] for name in ARRAYS})
