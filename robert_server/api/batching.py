"""Micro-batching: gather concurrent calls of one operation into one call for many items.

At thousands of /status polls a second, the fixed cost of each gRPC call and of each database round trip
dominates the CPU of the API. :class:`MicroBatcher` lets each request ``await batcher.submit(item)`` as if
it were alone, while one call ``fn(items)`` serves every request that arrived within ``max_delay`` seconds
(or as soon as ``max_batch`` are waiting). Under load, while ``max_in_flight`` batches are running, a
partial batch keeps gathering until one returns (group commit): batches grow with the load and the
latency of ``fn``, while a lone request on an idle server waits ``max_delay`` at most::

    batcher = MicroBatcher(read_many, max_batch=50, max_delay=0.001)
    doc = await batcher.submit(id_a)     # from many concurrent handlers
    ...
    await batcher.close()                # in the app's cleanup_ctx

``fn`` answers one result per item, in order; a result that is an exception is raised to that item's
caller only, an exception raised by ``fn`` itself to every caller of the batch. A caller cancelled while
it waits (e.g. its request deadline) does not disturb the others, and ``fn`` always runs to its end in
a task of its own (never half-cancelled with its caller). A result computed for a caller that gave up
meanwhile is handed to ``lost(item, result)`` (e.g. to undo what ``fn`` wrote for it); a caller that got
its result but could not deliver it hands it back with :meth:`give_back`. The callers of a batch are
woken ``WAKE_CHUNK`` at a time, one chunk per loop iteration, so that new requests are read meanwhile.
``max_delay`` 0 (or ``max_batch`` 1) disables batching: each submit runs ``fn([item])`` at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
LostFn = Callable[[T, R], Awaitable[None]]

log = logging.getLogger("robert.api")

# Callers woken per loop iteration. Each caller resumed goes on with its request (for /status: its
# answer signed, padded and written); waking the 32-50 callers of a batch at once made loop
# iterations of 4-8 ms with the sockets unread, and every request arriving meanwhile (refusals
# included) waited that long.
WAKE_CHUNK = 8


class BatcherClosed(RuntimeError):
    """submit() after close()."""


class MicroBatcher(Generic[T, R]):
    """Gather concurrent :meth:`submit` calls into batches of at most ``max_batch`` items, each waiting at
    most ``max_delay`` seconds for others to join; one ``fn(items)`` call per batch."""

    def __init__(
        self,
        fn: BatchFn[T, R],
        max_batch: int,
        max_delay: float,
        *,
        max_in_flight: int = 1,
        lost: LostFn[T, R] | None = None,
    ) -> None:
        if max_batch < 1 or max_delay < 0 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1, max_delay >= 0")
        self.fn = fn
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_in_flight = max_in_flight
        self.lost = lost
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # max_delay is over for the pending items: flush as soon as a batch slot frees
        self._running: set[asyncio.Task[None]] = set()  # batches not over (callers still being woken)
        self._computing = 0  # batches whose ``fn`` has not returned: what ``max_in_flight`` bounds
        self._undoing: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1 and self.max_delay > 0

    async def submit(self, item: T) -> R:
        """The result of ``item`` (or its exception), computed in a batch with concurrent submits."""
        if self._closed:
            raise BatcherClosed("batcher closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self.enabled or len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None and not self._due:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay, self._delay_over)
        return await future  # cancelling the caller cancels only its future

    def _delay_over(self) -> None:
        self._timer = None
        if self._computing < self.max_in_flight:
            self._flush()
        else:  # under load: keep gathering until a batch in flight returns
            self._due = True

    def _fn_returned(self) -> None:
        self._computing -= 1
        if self._due:  # the next batch starts now, while this one's callers are woken
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = False
        batch = [(item, f) for item, f in self._pending[: self.max_batch] if not f.done()]
        self._pending = self._pending[self.max_batch :]
        if self._pending:  # more than one batch was waiting (only after a full batch was held back)
            self._due = True
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._computing += 1
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            try:
                results = await self.fn([item for item, _ in batch])
            finally:
                self._fn_returned()
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - delivered to every caller of the batch
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for n, ((item, future), result) in enumerate(zip(batch, results, strict=True)):
            if n and n % WAKE_CHUNK == 0:
                await asyncio.sleep(0)  # let the loop read the sockets between chunks of callers
            if future.done():  # its caller gave up meanwhile: nobody will deliver this result
                if not isinstance(result, BaseException):
                    await self._lose(item, result)
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def give_back(self, item: T, result: R) -> None:
        """``result`` of ``item`` was not delivered after all: hand it to ``lost`` (in a task of its own,
        waited for by :meth:`close`, so that a cancelled caller can call this)."""
        if self.lost is not None:
            task = asyncio.get_running_loop().create_task(self._lose(item, result))
            self._undoing.add(task)
            task.add_done_callback(self._undoing.discard)

    async def _lose(self, item: T, result: R) -> None:
        if self.lost is None:
            return
        try:
            await self.lost(item, result)
        except Exception as e:  # noqa: BLE001 - one lost result must not fail the others
            log.error("could not undo an undelivered result", extra={"error": type(e).__name__})

    async def close(self) -> None:
        """Refuse new items, run the ones waiting, and wait for the batches in flight."""
        self._closed = True
        while self._pending or self._running or self._undoing:
            if self._pending:
                self._flush()
            await asyncio.gather(*self._running, *self._undoing, return_exceptions=True)
