"""What preprocessing hands to the featurisers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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


@dataclass
class PreparedData:
    """Clean events with contiguous indices, on the backend's frame library (cuDF or pandas).

    events: user_id, item_id, event_type, timestamp (datetime64[ns]), value (float32, 0 where
        absent), weight (float32), user_idx (int32, 0..n_users-1), item_idx (int32, 0..n_items-1).
    users: user_idx -> user_id, sorted by user_idx.
    items: item_idx -> item_id, sorted by item_idx, plus the catalogue's columns (category, price,
        text) where an items table was given; missing catalogue values are nulls.
    """

    events: Any
    users: Any
    items: Any
    n_users: int
    n_items: int
    reference_time: Any
    steps: list[StepCount] = field(default_factory=list)
    text_columns: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    # Per-user results several stages need (behaviour statistics), computed once by whoever asks first.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_categories(self) -> bool:
        return "category" in self.items.columns
