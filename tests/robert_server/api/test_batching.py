"""The micro-batcher of the phone API, on the real event loop (no mocks, no timing assertions)."""

from __future__ import annotations

import asyncio

import pytest

from robert_server.api.batching import BatcherClosed, MicroBatcher

DELAY = 0.005


class Recorder:
    """A batch function that records each batch; ``gate``, when set, holds every batch until opened."""

    def __init__(self, *, gate: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        if not gate:
            self.gate.set()
        self.started = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.started.set()
        await self.gate.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_concurrent_submits_share_one_call_and_get_their_own_results() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch=100, max_delay=DELAY)
    results = await asyncio.gather(*(batcher.submit(i) for i in (0, 2, 4, 6)))
    assert results == [0, 20, 40, 60]
    assert fn.batches == [[0, 2, 4, 6]]
    await batcher.close()


async def test_an_item_error_reaches_its_caller_only() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch=100, max_delay=DELAY)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 1"
    assert isinstance(results[3], ValueError) and str(results[3]) == "odd 3"
    assert fn.batches == [[0, 1, 2, 3]]
    await batcher.close()


async def test_a_failing_batch_function_fails_every_caller_of_that_batch() -> None:
    calls = 0

    async def broken(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    batcher = MicroBatcher(broken, max_batch=100, max_delay=DELAY)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, ConnectionError) for r in results)
    ok = MicroBatcher(Recorder(), max_batch=100, max_delay=DELAY)  # and a wrong result count
    ok.fn = lambda items: asyncio.sleep(0, result=[1])  # type: ignore[assignment,misc]
    results = await asyncio.gather(*(ok.submit(i) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await batcher.close()
    await ok.close()


async def test_max_batch_splits_and_full_batches_do_not_wait() -> None:
    fn = Recorder(gate=True)
    batcher = MicroBatcher(fn, max_batch=3, max_delay=60)  # a delay no test would wait for
    tasks = [asyncio.create_task(batcher.submit(i * 2)) for i in range(6)]
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        await fn.started.wait()
    for _ in range(3):
        await asyncio.sleep(0)
    assert fn.batches == [[0, 2, 4], [6, 8, 10]]  # both full batches start at once
    fn.gate.set()
    assert await asyncio.gather(*tasks) == [0, 20, 40, 60, 80, 100]
    await batcher.close()


async def test_a_partial_batch_gathers_while_one_is_in_flight() -> None:
    fn = Recorder(gate=True)
    batcher = MicroBatcher(fn, max_batch=100, max_delay=DELAY)
    first = asyncio.create_task(batcher.submit(0))
    await fn.started.wait()
    later = [asyncio.create_task(batcher.submit(i)) for i in (2, 4)]
    await asyncio.sleep(4 * DELAY)  # their delay is over, but a batch is still in flight
    later.append(asyncio.create_task(batcher.submit(6)))
    await asyncio.sleep(4 * DELAY)
    assert fn.batches == [[0]]
    fn.gate.set()
    assert await first == 0 and await asyncio.gather(*later) == [20, 40, 60]
    assert fn.batches == [[0], [2, 4, 6]]
    await batcher.close()


async def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    fn = Recorder(gate=True)
    batcher = MicroBatcher(fn, max_batch=100, max_delay=DELAY)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in (0, 2, 4)]
    await fn.started.wait()
    tasks[1].cancel()  # while its batch runs (e.g. the request's deadline)
    fn.gate.set()
    assert await tasks[0] == 0 and await tasks[2] == 40
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    # cancelled before its batch starts: left out of the batch
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (6, 8)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    assert await waiting[1] == 80
    assert fn.batches == [[0, 2, 4], [8]]
    await batcher.close()


async def test_a_delay_of_zero_disables_batching() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_batch=100, max_delay=0)
    results = await asyncio.gather(*(batcher.submit(i) for i in (0, 2, 4)))
    assert results == [0, 20, 40]
    assert sorted(fn.batches) == [[0], [2], [4]]
    with pytest.raises(ValueError, match="odd 1"):
        await batcher.submit(1)
    await batcher.close()


async def test_close_runs_the_waiting_items_and_leaves_no_task() -> None:
    # The event loop is the session's: tasks of other tests' servers may live on it; only ours count.
    before = asyncio.all_tasks()
    fn = Recorder(gate=True)
    batcher = MicroBatcher(fn, max_batch=100, max_delay=60)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in (0, 2)]
    await asyncio.sleep(0)
    assert fn.batches == []  # waiting for its (long) delay
    closing = asyncio.create_task(batcher.close())
    await fn.started.wait()
    assert not closing.done()  # close waits for the batch in flight
    fn.gate.set()
    await closing
    assert await asyncio.gather(*tasks) == [0, 20]
    assert asyncio.all_tasks() - before == set()
    with pytest.raises(BatcherClosed):
        await batcher.submit(4)


def test_bad_parameters_are_refused() -> None:
    for kw in ({"max_batch": 0, "max_delay": 0.001}, {"max_batch": 2, "max_delay": -1}):
        with pytest.raises(ValueError):
            MicroBatcher(Recorder, **kw)  # type: ignore[arg-type]


async def test_the_callers_of_a_batch_are_woken_a_chunk_per_loop_iteration() -> None:
    """Waking the 50 callers of a batch in one loop iteration kept the loop from its sockets while
    each built its answer (issue 10: refusals waited behind them). Each chunk of WAKE_CHUNK callers is
    woken in an iteration of its own: a task that counts the iterations sees them go by in between."""
    from robert_server.api.batching import WAKE_CHUNK

    n = 5 * WAKE_CHUNK
    batcher = MicroBatcher(Recorder(), max_batch=n, max_delay=DELAY)
    iterations = 0
    woken_at: list[int] = []

    async def count_iterations() -> None:
        nonlocal iterations
        while True:
            iterations += 1
            await asyncio.sleep(0)

    async def caller(i: int) -> None:
        await batcher.submit(2 * i)
        woken_at.append(iterations)

    ticker = asyncio.create_task(count_iterations())
    try:
        await asyncio.gather(*(caller(i) for i in range(n)))
    finally:
        ticker.cancel()
    await batcher.close()
    chunks = [woken_at[k : k + WAKE_CHUNK] for k in range(0, n, WAKE_CHUNK)]
    assert all(len(set(chunk)) == 1 for chunk in chunks), woken_at  # a chunk: one iteration
    assert len(set(woken_at)) == 5, woken_at  # each chunk: an iteration of its own


async def test_the_next_batch_starts_as_soon_as_the_previous_one_returns() -> None:
    """The callers of a batch are woken over several iterations; the next batch must not wait for
    that (it did, and each batch under load lost a few ms: fewer polls served at 3x the capacity)."""
    from robert_server.api.batching import WAKE_CHUNK

    n = 4 * WAKE_CHUNK
    gate = asyncio.Event()
    woken = 0
    woken_when_started: list[int] = []

    async def fn(items: list[int]) -> list[int]:
        woken_when_started.append(woken)
        await gate.wait()
        return items

    batcher = MicroBatcher(fn, max_batch=n, max_delay=DELAY, max_in_flight=1)

    async def caller(i: int) -> None:
        nonlocal woken
        await batcher.submit(i)
        woken += 1

    first = [asyncio.create_task(caller(i)) for i in range(n)]  # a full batch: runs at once
    await asyncio.sleep(DELAY * 4)  # a partial batch waits, due, while the first is in flight
    second = [asyncio.create_task(caller(n + i)) for i in range(2)]
    await asyncio.sleep(DELAY * 4)
    assert woken_when_started == [0]
    gate.set()
    await asyncio.gather(*first, *second)
    await batcher.close()
    assert len(woken_when_started) == 2
    assert woken_when_started[1] < n, woken_when_started  # started before the first's callers all woke
