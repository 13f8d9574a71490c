"""Leave-last-out: each user's last interacted item is held out, everything else stays for training.

Works on the event table's arrays (user_idx, item_idx, time, weight) where they are (NumPy or CuPy):
no events frame is made, so the split and everything after it stay on the device.

Rules, so every run of the same input and seed splits the same way:
- eligible users have at least 2 distinct items (one to hold out, one left to learn from);
- the held-out item is that of the user's latest event; ties on the timestamp (an invoice's lines, a
  funnel logged in one second) go to the higher event weight, then to a seeded hash of (user, item),
  which is fixed for a seed but favours no part of the catalogue, unlike "lowest item id";
- every event of the user on the held-out item leaves the training part, so the target is never
  "already seen" there (else excluding seen items would exclude the answer).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.config import MAX_SEED
from gpuclust.errors import CatalogueWarning, UsageError
from gpuclust.preprocess.prepared import PreparedData
from gpuclust.segments import offsets_of, segment_first, segment_last, stable_order

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable


@dataclass
class Holdout:
    """train: the events left to learn from (prepared data over the same users and items); users, items:
    the held-out (user_idx, item_idx) as int64 arrays where the events are, one per eligible user,
    ascending by user."""

    train: PreparedData
    users: Any
    items: Any

    @property
    def n_eligible(self) -> int:
        return int(len(self.users))


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


def held_out(user: Any, item: Any, time: Any, weight: Any, n_items: int, seed: int, xp: Any,
             presorted: bool = False) -> tuple[Any, Any]:
    """The rules of the module note on arrays, in any row order: (user_idx, item_idx) held out per eligible
    user, ascending by user. Runs where the arrays are (NumPy or CuPy).

    On rows sorted by (user, time), as the event table keeps them, it is a few passes over the rows: a
    user is eligible where some item differs from its first one, and only the rows at its latest time
    are ranked (by weight, then the seeded hash). Other orders are sorted once first; `presorted` (rows of
    an event table, or a subset of them in order) skips the check, six passes over the log."""
    if len(user) == 0:
        return user.astype(xp.int64), item.astype(xp.int64)
    u, i, t = user.astype(xp.int64), item.astype(xp.int64), time.astype(xp.int64)
    if not presorted and not _sorted_by_user_time(u, t, xp):
        order = stable_order(u, t, xp)
        u, i, t, weight = u[order], i[order], t[order], weight[order]
    n = int(u[-1]) + 1
    offsets = offsets_of(u, n, xp)
    first_item = segment_first(i, offsets, -1, xp)
    eligible = xp.bincount(u, weights=(i != first_item[u]).astype(xp.float64), minlength=n) > 0
    rows = xp.nonzero(eligible[u] & (t == segment_last(t, offsets, 0, xp)[u]))[0]
    u, i = u[rows], i[rows]
    # Non-negative float32 weights sort as their bits do; -0.0 is 0.0 first. One int64 key array: CuPy's
    # lexsort takes a single stacked array.
    w = (weight[rows].astype(xp.float32) + xp.float32(0.0)).view(xp.int32).astype(xp.int64)
    order = xp.lexsort(xp.stack([seeded_hash(u, i, seed, xp), w, u]))
    u, i = u[order], i[order]
    last = xp.ones(len(u), dtype=bool)
    last[:-1] = u[1:] != u[:-1]
    return u[last], i[last]


def _sorted_by_user_time(u: Any, t: Any, xp: Any) -> bool:
    if len(u) < 2:
        return True
    du = u[1:] - u[:-1]
    return bool(((du > 0) | ((du == 0) & (t[1:] >= t[:-1]))).all())


def training_rows(user: Any, item: Any, test_user: Any, test_item: Any, n_items: int, xp: Any) -> Any:
    """True for the events that stay for training: every event of a user on its held-out item leaves.

    With one held-out item per user (what `held_out` gives) that is a gather of each event's user's item,
    one pass; `isin` over (user, item) keys sorts the whole log (3.2 s against 0.3 s at 40M events)."""
    if len(user) == 0 or len(test_user) == 0:
        return xp.ones(len(user), dtype=bool)
    test_user, user = test_user.astype(xp.int64), user.astype(xp.int64)
    n_users = int(max(int(user.max()), int(test_user.max()))) + 1
    if int(xp.bincount(test_user, minlength=n_users).max()) > 1:  # several items held out of a user
        held = test_user * int(n_items) + test_item.astype(xp.int64)
        return ~xp.isin(user * int(n_items) + item.astype(xp.int64), held)
    held_item = xp.full(n_users, -1, dtype=xp.int64)
    held_item[test_user] = test_item.astype(xp.int64)
    return held_item[user] != item.astype(xp.int64)


def split_table(data: PreparedData, seed: int = 0) -> tuple[Any, Any, Any]:
    """Leave-last-out on prepared data's event table, where it lives: (the training part as prepared
    data, test user_idx, test item_idx), one test row per eligible user, ascending by user."""
    data.require_complete("leave-last-out splits prepared data with events, users and items: prepare events "
                          "with Preprocessor().run(events, backend)")
    t: EventTable = data.table
    test_user, test_item = held_out(t.user, t.item, t.time, t.weight, data.n_items, split_seed(seed), t.xp,
                                    presorted=True)
    if len(test_user) == 0:
        raise NoEligibleUsers(NO_ELIGIBLE)
    keep = training_rows(t.user, t.item, test_user, test_item, data.n_items, t.xp)
    return data.with_table(t.subset(keep)), test_user, test_item


def leave_last_out(data: PreparedData, *old: Any, seed: int = 0, **unknown: Any) -> Holdout:
    """Hold out each eligible user's last item of prepared data (`split_table` as a `Holdout`); see the
    module note for the rules. The old form, (events, n_items, seed), is refused with the new one: its
    n_items would otherwise be read as something else or fail as a bare TypeError."""
    if not isinstance(data, PreparedData):
        raise UsageError(f"leave-last-out splits prepared data (Preprocessor().run(events, backend)), got "
                         f"{type(data).__name__}")
    if old or unknown:
        given = [*(repr(v)[:20] for v in old), *(f"{name}=" for name in unknown)]
        raise UsageError(f"leave_last_out(data, *, seed=0) takes prepared data and a keyword seed only, got also "
                         f"{', '.join(given)}; the items count comes from the data (the old form was "
                         "leave_last_out(events, n_items, seed))")
    train, users, items = split_table(data, seed)
    return Holdout(train, users, items)


def split_seed(seed: Any) -> int:
    """The split's seed as an int, in the range `--seed` takes: the hash would take a float, and a string
    would be repeated 2**60 times (MemoryError) before anyone said it is no seed."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) <= MAX_SEED:
        raise UsageError(f"the split's seed must be a whole number from 0 to {MAX_SEED} (2**32-1), got {seed!r}")
    return int(seed)


class NoEligibleUsers(UsageError):
    """No user has 2 distinct items to split; re-worded where a holdout's training part is split again."""


@contextmanager
def on_training_part(held: int) -> Iterator[None]:
    """Around work on a holdout's training part, from which `held` items of each user are out already (the
    fits of evaluate and compare). A further split there (evaluate's blend tuning, --objective recommend,
    --algorithm predictive) lacks a third (fourth) distinct item, which the plain message, "2 or more", would
    not say; and the items table's share of events was warned about on the whole log, so each fit's own
    figure for its part (a little different every time) is not warned again."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CatalogueWarning)
            yield
    except NoEligibleUsers:
        raise NoEligibleUsers(
            f"no user has {held + 2} or more distinct items, which this needs: each user's last item is held out "
            f"{'to test' if held == 1 else 'to test, then the one before to tune on'}, and a leave-last-out of what "
            "is left (evaluate's blend tuning, --objective recommend, --algorithm predictive) needs 2 more, one to "
            "hold out and one to learn from; give a longer event log") from None


NO_ELIGIBLE = ("no user has 2 or more distinct items, so none can have one held out (leave-last-out, which "
               "evaluate, --objective recommend and --algorithm predictive need); give a longer event log")
