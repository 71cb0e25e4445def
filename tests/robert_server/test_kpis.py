"""KPI counters and gauges kept in documents (robert_server.kpis), on the real database."""

from __future__ import annotations

import asyncio
import datetime as dt

from pymongo.asynchronous.database import AsyncDatabase

from robert_server import kpis

D1, D2, D3 = dt.date(2024, 6, 1), dt.date(2024, 6, 2), dt.date(2024, 6, 3)


async def test_counters_add_up_per_day_and_over_a_range(db: AsyncDatabase) -> None:
    await kpis.increment(db, D1, reports=1, contactsProcessed=10)
    await kpis.increment(db, D2, reports=2, hellosRejectedBadMac=3, unused=0)
    await kpis.increment(db, D3, reports=4)
    everything = await kpis.report(db)
    assert everything["reports"] == 7 and everything["contactsProcessed"] == 10
    assert everything["hellosRejectedBadMac"] == 3
    assert "unused" not in everything  # zero increments write nothing
    middle = await kpis.report(db, since=D2, until=D2)
    assert middle["reports"] == 2 and middle["contactsProcessed"] == 0


async def test_every_known_kpi_is_reported_even_when_never_counted(db: AsyncDatabase) -> None:
    got = await kpis.report(db)
    assert set(kpis.COUNTERS) | set(kpis.GAUGES) <= set(got)
    assert all(got[k] == 0 for k in kpis.COUNTERS)
    assert got["usersAboveRiskThresholdButRetentionPeriodExpired"] == 0


async def test_gauges_are_set_and_adjusted(db: AsyncDatabase) -> None:
    await kpis.adjust_gauges(db, usersAtRisk=2)
    await kpis.adjust_gauges(db, usersAtRisk=-1)
    assert (await kpis.report(db))["usersAtRisk"] == 1
    await kpis.set_gauges(db, usersAtRisk=5)
    assert (await kpis.report(db, since=D3))["usersAtRisk"] == 5  # gauges ignore the day range


async def test_increment_once_counts_each_run_once_even_when_runs_race_on_a_new_day(
    db: AsyncDatabase,
) -> None:
    day = dt.date(2026, 11, 23)
    runs = [f"run-{i}" for i in range(12)]
    results = await asyncio.gather(
        *(kpis.increment_once(db, day, r, {"alertedUsers": 1}, {"usersAtRisk": 1}) for r in runs + runs)
    )
    assert sum(results) == len(runs)  # each run counted by exactly one of its two attempts
    report = await kpis.report(db)
    assert report["alertedUsers"] == len(runs) and report["usersAtRisk"] == len(runs)
    assert "_runs" not in report


async def test_concurrent_first_increments_of_a_day_are_all_kept(db: AsyncDatabase) -> None:
    day = dt.date(2026, 11, 24)
    await asyncio.gather(*(kpis.increment(db, day, reports=1) for _ in range(10)))
    assert (await kpis.report(db))["reports"] == 10


async def test_a_gauge_recount_is_set_only_if_no_run_was_counted_since_it_was_read(db: AsyncDatabase) -> None:
    runs = await kpis.counted_runs(db)
    assert runs is None
    assert await kpis.set_gauges_if_runs(db, runs, usersAtRisk=2)  # creates the document
    assert (await kpis.report(db))["usersAtRisk"] == 2
    runs = await kpis.counted_runs(db)
    await kpis.increment_once(db, D1, "run-1", {}, {"usersAtRisk": 1})  # a concurrent count
    assert not await kpis.set_gauges_if_runs(db, runs, usersAtRisk=5)
    assert (await kpis.report(db))["usersAtRisk"] == 3
    runs = await kpis.counted_runs(db)
    assert runs == ["run-1"]
    assert await kpis.set_gauges_if_runs(db, runs, usersAtRisk=4)
    assert (await kpis.report(db))["usersAtRisk"] == 4
