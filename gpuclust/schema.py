"""The canonical schema every stage works on, and the default event weights."""

from __future__ import annotations

USER = "user_id"
ITEM = "item_id"
EVENT = "event_type"
TIME = "timestamp"
VALUE = "value"

CATEGORY = "category"
PRICE = "price"
TITLE = "title"

# Added by preprocessing.
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
WEIGHT = "weight"

# A purchase says more about a user than a view; ratings count like a strong click.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "cart": 3.0,
    "purchase": 5.0,
    "rating": 3.0,
}
