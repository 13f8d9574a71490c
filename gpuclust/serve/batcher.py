"""Micro-batching: the requests that arrive while one pass through the model runs share the next pass.

Placing 50 users in one pass costs little more than placing one (the per-call overhead of the sparse
and dense steps dominates small inputs, and on a GPU so does each launch), so under load the service
merges what is waiting into one `FastAssigner.place` call. Nothing waits for company by default: a
lone request runs at once, and batches form only from requests that queued up behind a running
pass (`max_wait_s` > 0 adds a deliberate wait). A batch is cut at `max_users`. Requests that started
on different models (a reload in between) never share a pass: each finishes on the model it began on.

A pass runs in a worker thread, off the event loop: while it runs, the loop goes on answering
/healthz and reading the requests that will form the next batch. Passes run one at a time, so the
thread never competes with another pass; `record` (the counters) runs back on the loop after each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

MAX_WAIT_S = 1.0  # the longest deliberate wait for company: a request never waits for long


class ShuttingDown(RuntimeError):
    """The service stopped before this request's pass ran."""


@dataclass
class Job:
    state: Any
    work: Any  # what `compute` takes, with `.users` (how many users it places)
    future: asyncio.Future


class MicroBatcher:
    """`await submit(state, work)` returns `compute(state, [work, ...])[i]` for this work."""

    def __init__(self, compute: Callable[[Any, list[Any]], list[Any]], max_users: int = 1024,
                 max_wait_s: float = 0.0, record: Callable[[Any, list[Any], list[Any]], None] | None = None) -> None:
        if not 0 <= max_wait_s <= MAX_WAIT_S:  # also refuses NaN
            raise ValueError(f"max_wait_s must be from 0 to {MAX_WAIT_S} s, got {max_wait_s}")
        self.compute = compute  # runs in a worker thread
        self.record = record  # runs on the loop, after each pass
        self.max_users = max_users
        self.max_wait_s = max_wait_s
        self._running: list[Job] = []
        self._queue: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        running = list(self._running)  # the pass being cancelled clears its list as it ends
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in (*running, *self._queue):
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the service is shutting down; send the request again"))
        self._queue.clear()

    async def submit(self, state: Any, work: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(Job(state, work, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # handlers that are ready add their requests first
            if self.max_wait_s > 0 and self._users_waiting() < self.max_users:
                await asyncio.sleep(self.max_wait_s)
            while self._queue:
                await self._run_batch(self._take())

    def _users_waiting(self) -> int:
        return sum(job.work.users for job in self._queue)

    def _take(self) -> list[Job]:
        batch, users = [self._queue.popleft()], 0
        users = batch[0].work.users
        while self._queue and users + self._queue[0].work.users <= self.max_users \
                and self._queue[0].state is batch[0].state:
            job = self._queue.popleft()
            batch.append(job)
            users += job.work.users
        return batch

    async def _run_batch(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.future.cancelled()]  # a client that went away
        if not live:
            return
        self._running = live
        try:
            state, works = live[0].state, [job.work for job in live]
            results = await anyio.to_thread.run_sync(self.compute, state, works)
            if self.record is not None:
                self.record(state, works, results)
        except Exception as exc:  # noqa: BLE001 - each waiting request gets the error, the loop goes on
            for job in live:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self._running = []
        for job, result in zip(live, results, strict=True):
            if not job.future.done():  # cancelled meanwhile: its client went away
                job.future.set_result(result)
