"""The claim of the daily matching job (``matching_state``) against the real database."""

from __future__ import annotations

import asyncio
import datetime as dt

from pymongo.asynchronous.database import AsyncDatabase

from robert_server.matching import state

LEASE = 60.0
DAY = dt.date(2026, 3, 2)
NOON = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)


async def test_one_worker_of_many_claims_the_days_job(db: AsyncDatabase) -> None:
    got = await asyncio.gather(*(state.claim_daily(db, DAY, NOON, LEASE, f"w{i}") for i in range(4)))
    assert sorted(got) == [False, False, False, True]
    doc = await state.collection(db).find_one({"_id": state.DAILY})
    assert doc is not None and doc["owner"] == f"w{got.index(True)}"


async def test_a_finished_job_is_claimed_again_only_the_next_day(db: AsyncDatabase) -> None:
    assert await state.claim_daily(db, DAY, NOON, LEASE, "w1")
    await state.finish_daily(db, DAY)
    later = NOON + dt.timedelta(hours=6)  # long after the lease: done is what stops a second run
    assert not await state.claim_daily(db, DAY, later, LEASE, "w2")
    next_day = NOON + dt.timedelta(days=1)
    assert await state.claim_daily(db, DAY + dt.timedelta(days=1), next_day, LEASE, "w2")


async def test_the_job_of_a_dead_worker_is_taken_up_when_its_lease_ends(db: AsyncDatabase) -> None:
    assert await state.claim_daily(db, DAY, NOON, LEASE, "dead")  # never finished
    assert not await state.claim_daily(db, DAY, NOON + dt.timedelta(seconds=LEASE - 1), LEASE, "w2")
    assert await state.claim_daily(db, DAY, NOON + dt.timedelta(seconds=LEASE + 1), LEASE, "w2")
