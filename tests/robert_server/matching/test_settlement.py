"""KPI settlement of the risk writes' outbox against the real database: counted once, whatever happened."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock, ServiceTime
from robert_server import kpis, registrations
from robert_server.matching.context import MatchingConfig, PassContext
from robert_server.matching.settlement import settle_kpis

NOW = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)


def context(db: AsyncDatabase, page: int = 500) -> PassContext:
    time = ServiceTime(dt.date(2026, 1, 1), ManualClock(NOW.timestamp()))
    return PassContext(db, time, MatchingConfig(risk_page=page), "w", lambda options: options[0])


async def pending(db: AsyncDatabase, id_a: bytes, run_id: str, **counts: int) -> None:
    """A registration whose risk write by ``run_id`` left ``counts`` in the outbox."""
    await registrations.create(db, id_a, 0, None)
    fields: dict[str, Any] = {"kpi_pending": True, "kpi_run": run_id, "kpi_counts": counts}
    await registrations.collection(db).update_one({"_id": id_a}, {"$set": fields})


async def test_the_outbox_is_counted_once_even_when_a_worker_died_after_counting(db: AsyncDatabase) -> None:
    await pending(db, b"a" * 5, "r1", alertedUsers=1, usersAtRisk=1)
    await pending(db, b"b" * 5, "r1", alertedUsers=1, usersAtRisk=1)
    await pending(db, b"c" * 5, "r1", usersAboveRiskThresholdButRetentionPeriodExpired=1)
    # r2 was counted by a worker that died before clearing its outbox.
    await pending(db, b"d" * 5, "r2", alertedUsers=1, usersAtRisk=1)
    await kpis.increment_once(db, NOW.date(), "r2", {"alertedUsers": 1}, {"usersAtRisk": 1})

    ctx = context(db)
    await settle_kpis(ctx)
    await settle_kpis(ctx)

    k = await kpis.report(db)
    assert k["alertedUsers"] == 3 and k["usersAtRisk"] == 3
    assert k["usersAboveRiskThresholdButRetentionPeriodExpired"] == 1
    assert ctx.stats.counters == {"alertedUsers": 2, "usersAboveRiskThresholdButRetentionPeriodExpired": 1}
    assert await registrations.find_kpi_pending(db, 10) == []


async def test_a_run_read_over_two_pages_is_counted_whole(db: AsyncDatabase) -> None:
    for k in range(3):
        await pending(db, bytes([k]) * 5, "r1", alertedUsers=1)
    await settle_kpis(context(db, page=2))
    assert (await kpis.report(db))["alertedUsers"] == 3


async def test_a_run_still_landing_while_another_worker_settles_is_counted_whole(db: AsyncDatabase) -> None:
    """Worker B settles run r1 while worker A's risk writes of r1 are still landing: the writes that land
    after B's settlement are counted by the next settlement, not refused as "r1 already counted"."""
    await pending(db, b"a" * 5, "r1", alertedUsers=1, usersAtRisk=1)
    await pending(db, b"b" * 5, "r1", alertedUsers=1, usersAtRisk=1)
    await settle_kpis(context(db))  # worker B
    await pending(db, b"c" * 5, "r1", alertedUsers=1, usersAtRisk=1)  # the rest of A's bulk write lands
    await settle_kpis(context(db))  # worker A, after its writes
    k = await kpis.report(db)
    assert k["alertedUsers"] == 3 and k["usersAtRisk"] == 3


async def test_a_page_counted_by_a_worker_that_died_is_not_counted_again(db: AsyncDatabase) -> None:
    """Per-document keys: a page counted (keys remembered) but not cleared is counted once, even read
    again together with documents never counted."""
    for k in range(3):
        await pending(db, bytes([k]) * 5, "r1", alertedUsers=1, usersAtRisk=1)
    ctx = context(db, page=2)
    docs = await registrations.find_kpi_pending(db, 2)
    keys = [registrations.kpi_key(d) for d in docs]
    await kpis.increment_once_keys(db, NOW.date(), keys, {"alertedUsers": 2}, {"usersAtRisk": 2})  # then died
    await settle_kpis(ctx)
    await settle_kpis(ctx)
    k = await kpis.report(db)
    assert k["alertedUsers"] == 3 and k["usersAtRisk"] == 3
    assert ctx.stats.counters == {"alertedUsers": 1}
    assert await registrations.find_kpi_pending(db, 10) == []


async def test_a_settlement_retried_after_midnight_counts_nothing_twice(db: AsyncDatabase) -> None:
    """The counts go to the day of their risk write (carried by the run id), whenever they are settled:
    a worker that counted on day D and died before clearing, retried on D+1, adds nothing."""
    run = f"{NOW.date().isoformat()}/r1"
    for k in range(3):
        await pending(db, bytes([k]) * 5, run, alertedUsers=1, usersAtRisk=1)
    docs = await registrations.find_kpi_pending(db, 10)
    keys = [registrations.kpi_key(d) for d in docs]
    await kpis.increment_once_keys(db, NOW.date(), keys, {"alertedUsers": 3}, {"usersAtRisk": 3})  # then died
    time = ServiceTime(dt.date(2026, 1, 1), ManualClock((NOW + dt.timedelta(days=1)).timestamp()))
    ctx = PassContext(db, time, MatchingConfig(), "w", lambda options: options[0])
    await settle_kpis(ctx)
    k = await kpis.report(db)
    assert k["alertedUsers"] == 3 and k["usersAtRisk"] == 3
    assert await registrations.find_kpi_pending(db, 10) == []
    assert (await kpis.report(db, since=NOW.date(), until=NOW.date()))["alertedUsers"] == 3
