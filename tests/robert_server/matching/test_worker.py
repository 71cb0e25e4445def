"""The matching worker against the real database and a real crypto service (PROTOCOL.md 8, 9)."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from robert_server import contacts, kpis, registrations
from robert_server.federation import outbox
from robert_server.matching.scoring import score_contact
from tests.robert_server.matching.conftest import LEASE, Matching

FULL_EPOCH = 14.0  # score of 15 minutes at RSSI -35 (hand-computed in test_scoring)


async def test_close_contact_for_an_hour_puts_the_heard_phone_at_risk(matching: Matching) -> None:
    heard = await matching.phone()
    e = matching.days_ago_epoch(1)
    await matching.upload(*(matching.contact(heard, e + k) for k in range(4)))

    stats = await matching.worker().run_once()

    reg = await registrations.get(matching.db, heard.id_a)
    assert reg is not None
    assert reg["exposures"] == {str(e + k): pytest.approx(FULL_EPOCH) for k in range(4)}
    assert reg["at_risk"] is True and reg["risk_pending"] is False and reg["notified"] is False
    assert reg["latest_risk_epoch"] == matching.cs.epoch_now()
    day = matching.cs.time.epoch_start(e + 3)
    assert reg["last_contact_ntp"] == day - day % 86_400
    assert await contacts.pending_batches(matching.db) == 0
    assert stats.batches == 1
    k = await kpis.report(matching.db)
    assert (k["contactsProcessed"], k["hellosProcessed"], k["hellosScored"]) == (4, 60, 60)
    assert (k["alertedUsers"], k["usersAtRisk"]) == (1, 1)


async def test_five_minutes_is_no_risk(matching: Matching) -> None:
    heard = await matching.phone()
    await matching.upload(matching.contact(heard, matching.days_ago_epoch(1), minutes=5))
    await matching.worker().run_once()
    reg = await registrations.get(matching.db, heard.id_a)
    assert reg is not None
    assert reg["exposures"] == {str(matching.days_ago_epoch(1)): pytest.approx(4.0)}
    assert reg["at_risk"] is False


async def test_rejections_are_counted_and_never_scored(matching: Matching) -> None:
    heard, unregistered = await matching.phone(), await matching.phone(registered=False)
    stranger = await matching.phone()
    await registrations.delete(matching.db, stranger.id_a)  # unregistered after the contact
    e = matching.days_ago_epoch(2)
    good = matching.contact(heard, e, bad_mac=3)
    late = matching.contact(heard, e + 1, minutes=2, time_shift16=400)  # HELLO times off by 400 s
    foreign = matching.contact(heard, e + 2, cc=0x22)
    await matching.upload(
        good, late, foreign, matching.contact(unregistered, e), matching.contact(stranger, e)
    )

    await matching.worker().run_once()

    reg = await registrations.get(matching.db, heard.id_a)
    assert reg is not None
    hellos = [(h.time_collected, h.rssi) for h in good.hellos[3:]]
    assert reg["exposures"] == {str(e): pytest.approx(score_contact(hellos))}
    assert await registrations.get(matching.db, stranger.id_a) is None  # nothing re-created
    k = await kpis.report(matching.db)
    assert k["hellosRejectedBadMac"] == 3
    assert k["hellosRejectedTimeMismatch"] == 2
    assert k["hellosRejectedForeignCountry"] == 15 and k["contactsForeign"] == 1
    assert k["contactsProcessed"] == 5 and k["hellosProcessed"] == 62
    kept = await outbox.pending(matching.db, 0x22, 10)
    assert len(kept) == 1 and [c["ebid"] for c in kept[0]["contacts"]] == [foreign.ebid]


async def test_a_batch_run_twice_counts_once(matching: Matching) -> None:
    heard = await matching.phone()
    contact = matching.contact(heard, matching.days_ago_epoch(1))
    report_id = await matching.upload(contact)
    await matching.worker().run_once()
    # The same batch again (as if a worker had died before deleting it).
    await contacts.store_report(matching.db, report_id, [contact], matching.cs.clock.utcnow())
    await matching.worker().run_once()
    reg = await registrations.get(matching.db, heard.id_a)
    assert reg is not None
    assert reg["exposures"] == {str(matching.days_ago_epoch(1)): pytest.approx(FULL_EPOCH)}


STEPS = ["validated", "foreign_stored", "exposures_added", "risk_evaluated", "counted", "completed"]


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", STEPS)
async def test_a_worker_dying_between_steps_loses_nothing_and_counts_nothing_twice(
    matching: Matching, step: str
) -> None:
    a, b = await matching.phone(), await matching.phone()
    e = matching.days_ago_epoch(3)
    await matching.upload(*(matching.contact(a, e + k) for k in range(4)), matching.contact(b, e, minutes=5))
    await matching.upload(matching.contact(b, e + 9, minutes=5), matching.contact(a, e + 4, cc=0x22))

    def crash(name: str) -> None:
        if name == step:
            raise Crash(name)

    with pytest.raises(Crash):
        await matching.worker(on_step=crash).run_once()
    await matching.worker().run_once()  # the lease has not ended: the dead worker's batch waits
    matching.advance(LEASE + 1)
    await matching.worker().run_once()

    assert await contacts.pending_batches(matching.db) == 0
    ra, rb = await registrations.get(matching.db, a.id_a), await registrations.get(matching.db, b.id_a)
    assert ra is not None and rb is not None
    assert ra["exposures"] == {str(e + k): pytest.approx(FULL_EPOCH) for k in range(4)}
    assert rb["exposures"] == {str(e): pytest.approx(4.0), str(e + 9): pytest.approx(4.0)}
    assert (ra["at_risk"], rb["at_risk"]) == (True, False)
    assert not ra["risk_pending"] and not rb["risk_pending"]
    assert len(await outbox.pending(matching.db, 0x22, 10)) == 1
    k = await kpis.report(matching.db)
    assert k["alertedUsers"] == 1 and k["usersAtRisk"] == 1
    # Counters: each batch's exactly once, wherever the worker died (they were lost when it died
    # between a batch's deletion and the counting).
    assert k["contactsProcessed"] == 7


async def test_two_workers_share_the_batches(matching: Matching) -> None:
    phones = [await matching.phone() for _ in range(3)]
    e = matching.days_ago_epoch(1)
    for k in range(8):
        await matching.upload(*(matching.contact(p, e + k, minutes=8) for p in phones))
    w1, w2 = matching.worker(owner="w1"), matching.worker(owner="w2")
    s1, s2 = await asyncio.gather(w1.run_once(), w2.run_once())
    assert s1.batches + s2.batches == 8
    assert await contacts.pending_batches(matching.db) == 0
    one = score_contact([(60 * m, -35) for m in range(8)])
    for p in phones:
        reg = await registrations.get(matching.db, p.id_a)
        assert reg is not None
        assert reg["exposures"] == {str(e + k): pytest.approx(one) for k in range(8)}
        assert reg["at_risk"] is True
    k = await kpis.report(matching.db)
    assert k["contactsProcessed"] == 24 and k["alertedUsers"] == 3 and k["usersAtRisk"] == 3


async def test_a_claimed_batch_is_claimed_once(matching: Matching) -> None:
    await matching.upload(matching.contact(await matching.phone(), matching.days_ago_epoch(1)))
    now = matching.cs.clock.utcnow()
    got = await asyncio.gather(*(contacts.claim_batch(matching.db, f"w{i}", now, LEASE) for i in range(4)))
    assert sum(g is not None for g in got) == 1
    assert await contacts.claim_batch(matching.db, "late", now, LEASE) is None


async def test_risk_window_and_purge(matching: Matching) -> None:
    recent, old = await matching.phone(), await matching.phone()
    e7, e8 = matching.days_ago_epoch(6.9), matching.days_ago_epoch(8)
    await matching.upload(*(matching.contact(recent, e7 - k) for k in range(2)))
    await matching.upload(*(matching.contact(old, e8 + k) for k in range(2)))
    await matching.worker().run_once()
    rr, ro = await registrations.get(matching.db, recent.id_a), await registrations.get(matching.db, old.id_a)
    assert rr is not None and ro is not None
    assert rr["at_risk"] is True and ro["at_risk"] is False
    assert (await kpis.report(matching.db))["usersAboveRiskThresholdButRetentionPeriodExpired"] == 1

    # 7 whole days after the contact day the flag is still up; the next day it clears.
    contact_day = rr["last_contact_ntp"]
    now = matching.cs.time.ntp_now()
    matching.advance(contact_day + 8 * 86_400 - now - 60)
    await matching.worker().run_once()
    rr = await registrations.get(matching.db, recent.id_a)
    assert rr is not None and rr["at_risk"] is True
    matching.advance(120)
    await matching.worker().run_once()
    rr = await registrations.get(matching.db, recent.id_a)
    assert rr is not None and rr["at_risk"] is False
    k = await kpis.report(matching.db)
    assert k["riskFlagsCleared"] == 1 and k["usersAtRisk"] == 0

    # 15 days after, the exposures are gone.
    matching.advance_days(8)
    await matching.worker().run_once()
    rr, ro = await registrations.get(matching.db, recent.id_a), await registrations.get(matching.db, old.id_a)
    assert rr is not None and ro is not None
    assert rr["exposures"] == {} and ro["exposures"] == {}
    assert (await kpis.report(matching.db))["exposuresPurged"] == 4


async def test_crypto_down_leaves_the_batch_for_later(matching: Matching) -> None:
    heard = await matching.phone()
    await matching.upload(matching.contact(heard, matching.days_ago_epoch(1)))
    await matching.cs.server.stop(None)
    stats = await matching.worker().run_once()
    assert stats.batches == 0
    assert await contacts.pending_batches(matching.db) == 1
    batch = await contacts.collection(matching.db).find_one({})
    assert batch is not None and batch["lease_owner"] is None  # given back at once


async def test_registrations_left_risk_pending_are_evaluated(matching: Matching) -> None:
    # As if a worker had added exposures and died before evaluating them, its batch since taken over.
    heard = await matching.phone()
    e = matching.days_ago_epoch(1)
    await registrations.add_exposures(matching.db, "some-batch", {heard.id_a: {e: 10.0, e + 1: 10.0}})
    reg = await registrations.get(matching.db, heard.id_a)
    assert reg is not None and reg["risk_pending"] is True and reg["at_risk"] is False
    await matching.worker().run_once()
    reg = await registrations.get(matching.db, heard.id_a)
    assert reg is not None and reg["risk_pending"] is False and reg["at_risk"] is True


async def test_concurrent_group_claims_take_each_batch_once(matching: Matching) -> None:
    phone = await matching.phone()
    for k in range(6):
        await matching.upload(matching.contact(phone, matching.days_ago_epoch(1) + k))
    now = matching.cs.clock.utcnow()
    got = await asyncio.gather(
        *(contacts.claim_batches(matching.db, f"w{i}", now, LEASE, 4) for i in range(4))
    )
    ids = [b["_id"] for group in got for b in group]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6
    assert all(len(group) <= 4 for group in got)
    for i, group in enumerate(got):
        assert all(b["lease_owner"] == f"w{i}" for b in group)
    assert await contacts.claim_batches(matching.db, "late", now, LEASE, 4) == []


async def test_a_group_with_a_batch_already_applied_adds_each_batch_once(matching: Matching) -> None:
    # Batch A was applied (its worker died before deleting it); a worker then claims A again together
    # with batch B: the one-write fast path must not apply, A must add nothing, B must add once.
    heard = await matching.phone()
    e = matching.days_ago_epoch(1)
    first = matching.contact(heard, e)
    report_a = await matching.upload(first)
    await matching.worker().run_once()
    await contacts.store_report(matching.db, report_a, [first], matching.cs.clock.utcnow())
    await matching.upload(matching.contact(heard, e + 1))
    stats = await matching.worker().run_once()
    assert stats.batches == 2
    reg = await registrations.get(matching.db, heard.id_a)
    assert reg is not None
    assert reg["exposures"] == {str(e): pytest.approx(FULL_EPOCH), str(e + 1): pytest.approx(FULL_EPOCH)}
    assert reg["at_risk"] is True and not reg["risk_pending"]
    k = await kpis.report(matching.db)
    # A's counters were added with its first completion (keyed by its batch id): not again.
    assert k["alertedUsers"] == 1 and k["usersAtRisk"] == 1 and k["contactsProcessed"] == 2


async def test_a_group_whose_lease_ended_completes_only_what_it_still_holds(matching: Matching) -> None:
    heard = await matching.phone()
    e = matching.days_ago_epoch(1)
    await matching.upload(matching.contact(heard, e))
    await matching.upload(matching.contact(heard, e + 1, minutes=5))
    now = matching.cs.clock.utcnow()
    group = await contacts.claim_batches(matching.db, "slow", now, LEASE, 8)
    assert len(group) == 2
    matching.advance(LEASE + 1)  # the slow worker's lease ends; another worker takes one batch over
    taken = await contacts.claim_batch(matching.db, "other", matching.cs.clock.utcnow(), LEASE)
    assert taken is not None
    slow = matching.worker(owner="slow")
    assert await slow.process_batches(group, now + dt.timedelta(seconds=LEASE))
    assert slow.stats.batches == 1  # only the batch it still held is deleted
    assert slow.stats.counters["contactsProcessed"] == 2  # both counted, each under its batch id
    left = await contacts.collection(matching.db).find({}).to_list()
    assert [(b["_id"], b["lease_owner"]) for b in left] == [(taken["_id"], "other")]
    other = matching.worker(owner="other")  # completes the batch it took over: counts nothing again
    assert await other.process_batches([taken], matching.cs.clock.utcnow() + dt.timedelta(seconds=LEASE))
    assert other.stats.batches == 1 and other.stats.counters["contactsProcessed"] == 0
    assert (await kpis.report(matching.db))["contactsProcessed"] == 2


async def test_the_daily_recount_leaves_unsettled_risk_counts_to_the_outbox(matching: Matching) -> None:
    # A registration put at risk by a risk write whose usersAtRisk +1 is not settled yet (another worker
    # between its write and its count): the daily recount must not count it, the settling does.
    heard = await matching.phone()
    await registrations.collection(matching.db).update_one(
        {"_id": heard.id_a},
        {
            "$set": {
                "at_risk": True,
                "last_contact_ntp": matching.cs.time.ntp_now() - 86_400,
                "kpi_pending": True,
                "kpi_run": "run-1",
                "kpi_counts": {"alertedUsers": 1, "usersAtRisk": 1},
            }
        },
    )
    worker = matching.worker()
    assert await worker.daily_maintenance()
    assert (await kpis.report(matching.db))["usersAtRisk"] == 0
    await worker.run_once()  # settles the outbox
    k = await kpis.report(matching.db)
    assert k["usersAtRisk"] == 1 and k["alertedUsers"] == 1
    await worker.run_once()
    assert (await kpis.report(matching.db))["usersAtRisk"] == 1


async def test_a_batch_counted_then_completed_a_day_later_is_counted_once(matching: Matching) -> None:
    """Counts go to the day the batch arrived: a worker that died after counting, its batch completed by
    another after midnight, adds nothing to the next day's document."""
    a = await matching.phone()
    e = matching.days_ago_epoch(3)
    await matching.upload(*(matching.contact(a, e + k) for k in range(3)))

    def crash(name: str) -> None:
        if name == "counted":
            raise Crash(name)

    with pytest.raises(Crash):
        await matching.worker(on_step=crash).run_once()
    matching.advance(86_400 + LEASE + 1)
    await matching.worker().run_once()
    assert await contacts.pending_batches(matching.db) == 0
    assert (await kpis.report(matching.db))["contactsProcessed"] == 3
