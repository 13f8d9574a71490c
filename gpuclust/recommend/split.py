"""Leave-last-out: each user's last interacted item is held out, everything else stays for training.

Works on prepared events (user_idx, item_idx, timestamp, weight) with frame operations that cuDF and
pandas share (sort, drop_duplicates, isin), so the split runs where the events are.

Rules, so every run of the same input and seed splits the same way:
- eligible users have at least 2 distinct items (one to hold out, one left to learn from);
- the held-out item is that of the user's latest event; ties on the timestamp (an invoice's lines, a
  funnel logged in one second) go to the higher event weight, then to a seeded hash of (user, item),
  which is fixed for a seed but favours no part of the catalogue, unlike "lowest item id";
- every event of the user on the held-out item leaves the training part, so the target is never
  "already seen" there (else excluding seen items would exclude the answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpuclust import schema
from gpuclust.errors import UsageError
from gpuclust.frames import local_values, local_xp

TIEBREAK = "_tiebreak"


@dataclass
class Holdout:
    """train: the events left to learn from; test: one row (user_idx, item_idx) per eligible user."""

    train: Any
    test: Any
    n_eligible: int


def seeded_hash(user_idx: Any, item_idx: Any, seed: int, xp: Any = np):
    """A 63-bit mix (splitmix64 finaliser) of (user, item, seed) for tie-breaking; same on NumPy and CuPy."""
    with np.errstate(over="ignore"):
        x = user_idx.astype(xp.uint64) * xp.uint64(0x9E3779B97F4A7C15)
        x ^= item_idx.astype(xp.uint64) * xp.uint64(0xC2B2AE3D27D4EB4F)
        x ^= xp.uint64((seed * 0x165667B19E3779F9 + 0x27D4EB2F165667C5) % 2**64)
        x ^= x >> xp.uint64(30)
        x *= xp.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> xp.uint64(27)
        x *= xp.uint64(0x94D049BB133111EB)
        x ^= x >> xp.uint64(31)
    return (x >> xp.uint64(1)).astype(xp.int64)


def eligible_users(events: Any) -> Any:
    """The user_idx of users with 2 or more distinct items: those leave-last-out can hold one out of."""
    distinct = events[[schema.USER_IDX, schema.ITEM_IDX]].drop_duplicates().groupby(schema.USER_IDX).size()
    return distinct[distinct >= 2].index


def leave_last_out(events: Any, n_items: int, seed: int = 0) -> Holdout:
    """Hold out each eligible user's last item; see the module note for the rules."""
    for col in (schema.USER_IDX, schema.ITEM_IDX, schema.TIME, schema.WEIGHT):
        if col not in events.columns:
            raise UsageError(f"events need a {col!r} column for leave-last-out; pass prepared events")
    eligible = eligible_users(events)
    n_eligible = len(eligible)
    if n_eligible == 0:
        raise UsageError("no user has 2 or more distinct items, so none can have one held out (leave-last-out, "
                         "which evaluate, --objective recommend and --algorithm predictive need); give a longer "
                         "event log")

    xp = local_xp(events[schema.USER_IDX])
    ranked = events[[schema.USER_IDX, schema.ITEM_IDX, schema.TIME, schema.WEIGHT]].copy()
    ranked[TIEBREAK] = seeded_hash(local_values(ranked[schema.USER_IDX]), local_values(ranked[schema.ITEM_IDX]),
                                   seed, xp)
    ranked = ranked[ranked[schema.USER_IDX].isin(eligible)]
    ranked = ranked.sort_values([schema.USER_IDX, schema.TIME, schema.WEIGHT, TIEBREAK])
    test = ranked.drop_duplicates(subset=[schema.USER_IDX], keep="last")[[schema.USER_IDX, schema.ITEM_IDX]]
    test = test.sort_values(schema.USER_IDX).reset_index(drop=True)

    held = _keys(test, n_items)
    train = events[~_keys(events, n_items).isin(held)].reset_index(drop=True)
    return Holdout(train=train, test=test, n_eligible=n_eligible)


def _keys(frame: Any, n_items: int):
    """(user, item) as one int64 key, so the anti-join is an `isin` that cuDF and pandas both have."""
    return frame[schema.USER_IDX].astype("int64") * int(n_items) + frame[schema.ITEM_IDX].astype("int64")
