"""Row blocks on a Dask cluster: one future per user partition, and the reductions over them.

A `Blocks` is what the stages pass along: the futures of one per-partition result (a prepared
partition, a feature block, the fused matrix) in partition order, with the users in each. Maps run
where the blocks live; reductions gather small per-block summaries (sums, Gram matrices, counts) and
add them up on the client. A future keeps its lineage, so a block lost with a worker is recomputed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Keyword values above this size travel as their own task's result (`broadcast`). (`Client.map` would put
# them in the graph under the keyword's name as key, which two maps with the same keyword then share.)
INLINE_BYTES = 50_000


def broadcast(client: Any, value: Any) -> Any:
    """`value` for the workers, with lineage: the result of a task whose spec holds the value, so the
    scheduler computes it again on a live worker if the one holding it dies. (Scattered data has no
    lineage, and the scheduler's active memory manager trims a scatter's replicas to one within seconds:
    a worker killed mid-run took the only copy, and the tasks needing it failed for lost dependencies.)
    Held for as long as the client, so the key exists while any block may still be recomputed."""
    future = client.submit(_value, value, pure=False)
    if not hasattr(client, "_gpuclust_held"):
        client._gpuclust_held = []
    client._gpuclust_held.append(future)
    return future


def _value(value: Any) -> Any:
    return value


def release_held(client: Any) -> None:
    """Let go of what `broadcast` held (a fit's end, on a cluster that lives on)."""
    for future in getattr(client, "_gpuclust_held", []):
        future.release()
    client._gpuclust_held = []


def pmap(client: Any, fn: Callable[..., Any], *iterables: Any, **kwargs: Any) -> list[Any]:
    """`Client.map` with keys of their own: a second fit on the same data must not meet the first one's
    keys while the scheduler forgets them."""
    return client.map(fn, *iterables, pure=False, **shipped(client, kwargs))


def shipped(client: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` for `Client.map`: large values broadcast (unique keys), futures and small values as given."""
    from dask.sizeof import sizeof
    from distributed import Future

    out = {}
    for name, value in kwargs.items():
        if not isinstance(value, Future) and sizeof(value) > INLINE_BYTES:
            value = broadcast(client, value)
        out[name] = value
    return out


@dataclass
class Blocks:
    client: Any
    futures: list[Any]
    sizes: list[int]  # users (rows) per block

    @property
    def n_rows(self) -> int:
        return int(sum(self.sizes))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    def map(self, fn: Callable[..., Any], *others: Blocks, **kwargs: Any) -> Blocks:
        """fn(block, *other blocks, **kwargs) per block; futures in kwargs arrive as their values."""
        futures = self.client.map(fn, self.futures, *[o.futures for o in others], pure=False,
                                  **shipped(self.client, kwargs))
        return Blocks(self.client, futures, list(self.sizes))

    def gather(self) -> list[Any]:
        return self.client.gather(self.futures)

    def total(self, fn: Callable[..., Any], *others: Blocks, **kwargs: Any) -> Any:
        """The sum over blocks of fn(block, ...): arrays, numbers, or tuples of them added element-wise."""
        parts = self.map(fn, *others, **kwargs).gather()
        first = parts[0]
        if isinstance(first, tuple):
            return tuple(sum(p[i] for p in parts) for i in range(len(first)))
        return sum(parts[1:], first)

    def rows(self, fn: Callable[..., Any], index: np.ndarray, *others: Blocks) -> list[Any]:
        """fn(block, *others, local_rows) for the blocks holding the global rows `index` (sorted), gathered
        in the order of `index`: how a sample of users comes to the client."""
        offsets = self.offsets
        which = np.searchsorted(offsets, index, side="right") - 1
        futures = []
        for b in np.unique(which):
            local = (index[which == b] - offsets[b]).astype(np.int64)
            args = [o.futures[b] for o in others]
            futures.append(self.client.submit(fn, self.futures[b], *args, local, pure=False))
        return self.client.gather(futures)

    def release(self) -> None:
        for f in self.futures:
            f.release()
        self.futures = []
