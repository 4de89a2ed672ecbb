"""Dynamic batching: requests that arrive together share one model call.

A job waits until `max_batch_size` compatible jobs are queued or `max_wait_ms` have passed since
the oldest one arrived, whichever comes first; jobs that queued up while the model was busy are
already past their wait and go at once. Only jobs with the same key share a batch (the service
keys them by model and kind of work, and by adapter only where adapters cannot mix); a job that
cannot share (sampling, streaming) runs alone without waiting. A job whose future is cancelled
(its client went away) is dropped from the queue unrun.

Every model call runs on one worker thread: the model (and the adapters loaded into it and
unloaded from it) is only ever touched by that thread, and the event loop never blocks on it.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The bounded queue is full; the caller answers 429 with Retry-After."""


@dataclass
class Job:
    key: Hashable
    payload: Any
    batchable: bool
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """`process(key, payloads) -> results` (same order and length; an exception in place of a
    result fails that job alone) runs on the model thread.
    `on_batch(size)` is told every batch size (for the metrics)."""

    def __init__(self, process: Callable[[Hashable, list[Any]], list[Any]], *, max_batch_size: int,
                 max_wait_ms: float, max_queue: int, on_batch: Callable[[int], None] | None = None,
                 after: DynamicBatcher | None = None):
        """`after`: another batcher whose work comes first: a batch here starts only while that
        one has nothing queued or running (the shadow's batcher, behind the live one)."""
        self.process = process
        self.after = after
        self.on_enqueue: list[Callable[[], None]] = []  # told of each job queued (the shadow preempts itself)
        self._running = 0  # batches being processed now (0 or 1)
        self._idle: asyncio.Event | None = None
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._pending: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._stopping = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-model")

    @property
    def depth(self) -> int:
        """Jobs waiting for the model (not counting the batch it is working on, nor jobs whose
        client went away: they are skipped)."""
        return sum(not job.future.done() for job in self._pending)

    async def idle(self) -> None:
        """Return once nothing is queued or running here."""
        while self._pending or self._running:
            self._idle.clear()
            await self._idle.wait()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="tunelab-batcher")

    def enqueue(self, key: Hashable, payload: Any, *, batchable: bool = True) -> asyncio.Future:
        """Queue a job now (QueueFull when the queue is full); the future gets its result."""
        if self._worker is None or self._stopping:
            raise RuntimeError("the batcher is not running")
        if len(self._pending) >= self.max_queue:  # make room of the abandoned jobs first
            self._pending = deque(job for job in self._pending if not job.future.done())
            if len(self._pending) >= self.max_queue:
                raise QueueFull
        job = Job(key, payload, batchable, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._wake.set()
        for callback in self.on_enqueue:
            callback()
        return job.future

    async def submit(self, key: Hashable, payload: Any, *, batchable: bool = True) -> Any:
        return await self.enqueue(key, payload, batchable=batchable)

    async def stop(self) -> None:
        """Finish every queued job, then stop the worker and its thread."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._worker is not None:
            await self._worker
        self.executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            while not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
            await self._fill(self._pending[0])
            if self.after is not None:
                await self.after.idle()
            batch = self._take_batch()
            if batch:
                self._running += 1
                try:
                    await self._execute(batch)
                finally:
                    self._running -= 1
            if not self._pending and not self._running:
                self._idle.set()

    async def _fill(self, oldest: Job) -> None:
        """Wait for more jobs until the batch could be full or the oldest job's wait is over."""
        if not oldest.batchable:
            return
        deadline = oldest.enqueued + self.max_wait_s
        while len(self._pending) < self.max_batch_size and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:  # waiting on an Event (not on a queue get) is safe to time out: nothing is lost
                await asyncio.wait_for(self._wake.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[Job]:
        """The oldest live job and the queued jobs that share its key, oldest first."""
        while self._pending and self._pending[0].future.done():  # its client went away
            self._pending.popleft()
        if not self._pending:
            return []
        first = self._pending.popleft()
        batch = [first]
        if first.batchable:
            kept: deque[Job] = deque()
            while self._pending and len(batch) < self.max_batch_size:
                job = self._pending.popleft()
                if job.future.done():
                    continue
                (batch if job.batchable and job.key == first.key else kept).append(job)
            kept.extend(self._pending)
            self._pending = kept
        return batch

    async def _execute(self, batch: list[Job]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self.process, batch[0].key,
                                                 [job.payload for job in batch])
        except Exception as exc:  # noqa: BLE001 (the error belongs to these requests, not the server)
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job, result in zip(batch, results):
            if job.future.done():
                continue
            if isinstance(result, BaseException):  # this job's own failure; the others got answers
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the model thread between batches (work on a model outside any request)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

