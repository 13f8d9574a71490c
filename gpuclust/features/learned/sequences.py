"""Each user's time-ordered events as flat tensors, and batches cut by a token budget.

Events are sorted by user, then time (ties keep the prepared order); the last `max_length` events of
each user are kept. Per event the encoder sees the item, the event type and the gap since the user's
previous event (a log2 bucket of seconds). Everything is built with the backend's array library and
handed to torch through DLPack, so on the GPU the log never visits the host; only the per-user lengths
(one integer per user) are on the host, where the batch planner needs them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuclust.backend import Backend, to_host, to_torch
from gpuclust.preprocess.prepared import PreparedData

if TYPE_CHECKING:
    from gpuclust.preprocess.table import EventTable

GAP_BUCKETS = 32  # 0 = padding, 1 = a user's first event, 2.. = 1 + floor(log2(1 + seconds)), capped


@dataclass
class Sequences:
    """Flat per-event tensors (on the torch device) with CSR-style offsets per user."""

    items: Any  # int64, item_idx + 1 (0 is padding)
    kinds: Any  # int64, event type code + 1 (0: padding or a type unknown at fit time)
    gaps: Any  # int64, gap bucket (see GAP_BUCKETS)
    offsets: Any  # int64 (n_users,), first event of each user
    lengths: Any  # int64 (n_users,) on the device
    host_lengths: np.ndarray  # the same on the host, for batch planning

    @property
    def n_users(self) -> int:
        return len(self.host_lengths)

    @property
    def n_tokens(self) -> int:
        return int(self.host_lengths.sum())


def event_codes(data: PreparedData, backend: Backend, names: list[str]):
    """Per event of the table 1 + the index of its type in `names`, 0 where unknown."""
    t: EventTable = data.table
    lookup = np.array([1 + list(names).index(n) if n in names else 0 for n in t.event_names], dtype=np.int64)
    return backend.asarray(lookup)[backend.asarray(t.event).astype(np.int64)]


def build_sequences(data: PreparedData, backend: Backend, event_types: list[str], max_length: int,
                    device: str) -> Sequences:
    """The last `max_length` events of every user (row i = user_idx i), time-ordered."""

    xp = backend.xp
    t: EventTable = data.table  # sorted by user, then time
    users, items = backend.asarray(t.user).astype(xp.int64), backend.asarray(t.item).astype(xp.int64)
    stamps = backend.asarray(t.time)
    kinds = event_codes(data, backend, event_types)
    n_users = int(data.n_users)
    counts = xp.bincount(users, minlength=n_users).astype(xp.int64)
    starts = xp.cumsum(counts) - counts
    rank = xp.arange(len(users), dtype=xp.int64) - starts[users]
    keep = counts[users] - rank <= max_length
    first = rank == 0
    seconds = xp.zeros(len(users), dtype=xp.float64)
    seconds[1:] = (stamps[1:] - stamps[:-1]).astype(xp.float64) / 1e9
    bucket = 2 + xp.floor(xp.log2(1.0 + xp.maximum(seconds, 0.0))).astype(xp.int64)
    bucket = xp.where(first, 1, xp.minimum(bucket, GAP_BUCKETS - 1))
    users, items, kinds, bucket = users[keep], items[keep], kinds[keep], bucket[keep]
    lengths = xp.minimum(counts, max_length)
    offsets = xp.cumsum(lengths) - lengths

    def dev(a):
        return to_torch(xp.ascontiguousarray(a)).to(device)

    host_lengths = to_host(lengths).astype(np.int64)
    return Sequences(dev(items + 1), dev(kinds), dev(bucket), dev(offsets), dev(lengths), host_lengths)


@dataclass
class Batch:
    """Users `rows` (host int64) of a Sequences, padded on the right to their longest sequence."""

    rows: np.ndarray
    width: int

    @property
    def tokens(self) -> int:
        return len(self.rows) * self.width

    def halves(self) -> list[Batch]:
        mid = len(self.rows) // 2
        return [Batch(self.rows[:mid], self.width), Batch(self.rows[mid:], self.width)]


def gather(seq: Sequences, rows: np.ndarray):
    """(items, kinds, gaps, lengths, mask) as (B, L) tensors for the users `rows`."""
    import torch

    device = seq.items.device
    index = torch.as_tensor(rows, device=device)
    lengths = seq.lengths[index]
    width = int(seq.host_lengths[rows].max())
    steps = torch.arange(width, device=device)
    mask = steps[None, :] < lengths[:, None]
    position = torch.where(mask, seq.offsets[index][:, None] + steps[None, :], 0)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    return (torch.where(mask, seq.items[position], zero), torch.where(mask, seq.kinds[position], zero),
            torch.where(mask, seq.gaps[position], zero), lengths, mask)


class TokenBatcher:
    """Users grouped by similar length, each batch at most `budget` padded tokens (and MAX rows).

    Sorting by length keeps padding small; a seeded shuffle of ties and of the batch order varies the
    batches between epochs. `shrink()` halves the budget after an out-of-memory error."""

    def __init__(self, lengths: np.ndarray, budget: int, max_rows: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.budget = int(budget)
        self.max_rows = int(max_rows)
        self.rng = np.random.default_rng(seed)

    def shrink(self) -> None:
        self.budget = max(1, self.budget // 2)

    def plan(self, users: np.ndarray | None = None, shuffle: bool = True) -> list[Batch]:
        users = np.arange(len(self.lengths)) if users is None else np.asarray(users)
        lengths = self.lengths[users]
        noise = self.rng.random(len(users)) if shuffle else np.zeros(len(users))
        order = users[np.lexsort((noise, lengths))]
        widths = self.lengths[order]
        batches, start = [], 0
        while start < len(order):
            # ascending lengths: a batch of r rows from `start` is r x widths[start + r - 1] tokens
            window = widths[start:start + self.max_rows]
            cost = np.arange(1, len(window) + 1) * window
            rows = max(1, int(np.searchsorted(cost, self.budget, side="right")))
            batches.append(Batch(order[start:start + rows], int(window[rows - 1])))
            start += rows
        if shuffle:
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.plan())
