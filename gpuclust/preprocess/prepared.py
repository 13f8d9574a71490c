"""What preprocessing hands to the featurisers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpuclust import schema
from gpuclust.errors import UsageError


@dataclass
class StepCount:
    """One cleaning step as the manifest records it."""

    step: str
    rows_in: int
    rows_out: int
    why: str

    @property
    def dropped(self) -> int:
        return self.rows_in - self.rows_out

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "dropped": self.dropped, "why": self.why}


class FrameCounter:
    """How many events frames were built from event tables: each is a whole-log copy (to the host, for
    pandas), which the stages should not need. The manifest records it per stage."""

    def __init__(self) -> None:
        self.built = 0


event_frames = FrameCounter()


class PreparedData:
    """Clean events with contiguous indices: the event table on the backend's device, and the small
    per-user and per-item tables on its frame library (cuDF or pandas).

    table: `EventTable`, sorted by (user, time): what the stages compute on.
    events: the same events as a frame (user_id, item_id, event_type, timestamp (datetime64[ns]), value
        (float32, 0 where absent), weight (float32), user_idx (int32), item_idx (int32)), built from the
        table on first use for the stages that still work on frames; or given, and the table built from it.
        Without either (a catalogue alone, for stages that read only the items) both are None.
    users: user_idx -> user_id, sorted by user_idx.
    items: item_idx -> item_id, sorted by item_idx, plus the catalogue's columns (category, price,
        text) where an items table was given; missing catalogue values are nulls.
    """

    def __init__(self, events: Any = None, users: Any = None, items: Any = None, n_users: int = 0, n_items: int = 0,
                 reference_time: Any = None, steps: list[StepCount] | None = None, text_columns: tuple[str, ...] = (),
                 event_types: tuple[str, ...] = (), table: Any = None, event_names: tuple[str, ...] | None = None,
                 xp: Any = None) -> None:
        self._events, self._table = events, table
        self.users, self.items = users, items
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.reference_time = reference_time
        self.steps = list(steps or [])
        self.text_columns, self.event_types = tuple(text_columns), tuple(event_types)
        # What event codes mean: every configured type (a table's codes), defaulting to the types present.
        self._event_names = tuple(event_names) if event_names is not None else tuple(event_types)
        self._xp = xp
        # Per-user results several stages need (behaviour statistics), computed once by whoever asks first.
        self.cache: dict = {}

    @property
    def events(self) -> Any:
        if self._events is None and self._table is not None:
            self._events = self._table.to_frame(self.users, self.items, frame_module(self.users))
            event_frames.built += 1
        return self._events

    @property
    def table(self) -> Any:
        if self._table is None and self._events is not None:
            from gpuclust.frames import local_xp
            from gpuclust.preprocess.table import EventTable

            xp = self._xp or local_xp(self._events[schema.USER_IDX])
            self._table = EventTable.from_frame(self._events, self.n_users, self._event_names, xp)
        return self._table

    @property
    def n_events(self) -> int:
        return len(self._table) if self._table is not None else len(self._events) if self._events is not None else 0

    def with_events(self, events: Any) -> PreparedData:
        """The same users, items and settings over other events of theirs (a holdout's training part);
        the table and the cached statistics are those of the new events."""
        return PreparedData(events, self.users, self.items, self.n_users, self.n_items, self.reference_time,
                            self.steps, self.text_columns, self.event_types, event_names=self._event_names,
                            xp=self._xp)

    def with_table(self, table: Any) -> PreparedData:
        """`with_events` for an event table of the same users and items (a holdout's training rows)."""
        return PreparedData(None, self.users, self.items, self.n_users, self.n_items, self.reference_time,
                            self.steps, self.text_columns, self.event_types, table=table,
                            event_names=self._event_names, xp=self._xp)

    def __len__(self) -> int:
        return self.n_events  # 0 for a catalogue alone, whose repr an error message shows

    def __repr__(self) -> str:
        return f"PreparedData(n_users={self.n_users}, n_items={self.n_items}, events={len(self)})"

    def missing(self) -> str | None:
        """What of events, users and items this lacks (a catalogue alone lacks the first two), in words;
        None where it has all three. Fit, embed and the split name it rather than fail inside."""
        lacks = [name for name, part in (("events", self._table if self._table is not None else self._events),
                                         ("users", self.users), ("items", self.items)) if part is None]
        return " and ".join(lacks) or None

    def require_complete(self, fix: str) -> None:
        """A UsageError naming what this lacks (`missing`) and `fix`: fit, embed and the split ask this."""
        if self.missing():
            raise UsageError(f"the prepared data has no {self.missing()} ({self!r}); {fix}")

    def catalogue(self) -> Any:
        """The items table these were prepared with: item_id and its columns, for the items that have any
        value in them (the others were not in it); None where none was given. What a fit on prepared data
        uses when it is given no other, so that categories and item text are not lost on the way."""
        extra = [c for c in self.items.columns if c not in (schema.ITEM, schema.ITEM_IDX)]
        if not extra:
            return None
        return self.items[[schema.ITEM, *extra]].dropna(subset=extra, how="all").reset_index(drop=True)

    @property
    def has_categories(self) -> bool:
        return "category" in self.items.columns


def frame_module(frame: Any) -> Any:
    import importlib

    return importlib.import_module(type(frame).__module__.split(".")[0])
