"""Batched reads and accepts of /status on the real database (robert_server.registrations)."""

from __future__ import annotations

from robert_server import registrations
from robert_server.registrations import StatusPoll

A, B, C, UNKNOWN = b"AAAAA", b"BBBBB", b"CCCCC", b"ZZZZZ"


async def _phones(db) -> None:
    for id_a in (A, B, C):
        await registrations.create(db, id_a, 10, None)


async def test_many_reads_answer_one_document_or_none_per_id_in_order(db) -> None:
    await _phones(db)
    docs = await registrations.get_many_for_status(db, [B, UNKNOWN, A, B])
    assert [d and d["_id"] for d in docs] == [B, None, A, B]
    assert "exposures" not in docs[0]  # only the status fields
    assert (await registrations.get_many_for_status(db, [C]))[0]["_id"] == C


async def test_a_bulk_accept_applies_each_compare_and_set(db) -> None:
    await _phones(db)
    await registrations.collection(db).update_one({"_id": B}, {"$set": {"last_status_epoch": 20}})
    polls = [
        StatusPoll(A, None, 30, 1, push_info={"token": "t"}),
        StatusPoll(B, None, 30, 2),  # stale: another poll of B was accepted since it was read
        StatusPoll(C, None, 30, 3, notify=True),
        StatusPoll(UNKNOWN, None, 30, 4),
    ]
    assert await registrations.accept_statuses(db, polls) == [True, False, True, False]
    docs = {d["_id"]: d async for d in registrations.collection(db).find({})}
    assert docs[A]["last_status_epoch"] == 30 and docs[A]["push_info"] == {"token": "t"}
    assert docs[B]["last_status_epoch"] == 20 and "last_drift" not in docs[B]
    assert docs[C]["notified"] is True and docs[C]["last_drift"] == 3
    retry = [StatusPoll(A, None, 30, 1), StatusPoll(B, None, 30, 2)]  # a new attempt: new write ids
    assert await registrations.accept_statuses(db, retry) == [False, False]  # A moved on to 30


async def test_polls_of_one_phone_in_one_batch_pass_one_at_a_time(db) -> None:
    await _phones(db)
    polls = [StatusPoll(A, None, 30, 0), StatusPoll(B, None, 30, 0), StatusPoll(A, None, 30, 0)]
    assert await registrations.accept_statuses(db, polls) == [True, True, False]
    # a minimum gap of 0 in the same epoch: each sees the write of the one before, and passes
    again = [StatusPoll(A, 30, 30, 0), StatusPoll(A, 30, 30, 0)]
    assert await registrations.accept_statuses(db, again) == [True, True]


async def test_only_the_justified_indexes_exist_and_older_ones_are_dropped(db) -> None:
    coll = registrations.collection(db)
    await coll.create_index("at_risk", sparse=True)  # as older versions made it
    await coll.create_index("risk_pending", sparse=True)
    await registrations.ensure_indexes(db)
    await registrations.ensure_indexes(db)  # idempotent
    info = await coll.index_information()
    assert set(info) == {"_id_", *registrations.INDEXES}
    assert info["risk_pending_true"]["partialFilterExpression"] == {"risk_pending": True}


async def test_the_daily_recount_counts_at_risk_registrations_but_not_uncounted_runs(db) -> None:
    await _phones(db)
    coll = registrations.collection(db)
    await coll.update_one({"_id": A}, {"$set": {"at_risk": True}})
    uncounted = {"at_risk": True, "kpi_pending": True, "kpi_run": "r2", "kpi_counts": {"usersAtRisk": 1}}
    await coll.update_one({"_id": B}, {"$set": uncounted})
    assert await registrations.count_at_risk_counted(db, ["r1"]) == 1  # B's +1 is still in the outbox
    assert await registrations.count_at_risk_counted(db, ["r1", "r2"]) == 2
    assert await registrations.count_at_risk_counted(db, None) == 1


async def test_many_reads_are_chunked(db) -> None:
    ids = [bytes([0, 0, 0, k // 256, k % 256]) for k in range(60)]
    for id_a in ids[:50]:
        await registrations.create(db, id_a, 10, None)
    docs = await registrations.get_many_for_status(db, ids)
    assert [d and d["_id"] for d in docs] == ids[:50] + [None] * 10
    assert len(await registrations.find_for_risk(db, ids)) == 50


async def test_an_undone_accept_restores_the_previous_poll_only_if_still_the_last(db) -> None:
    await _phones(db)
    first = StatusPoll(A, None, 30, 0, notify=True)
    assert await registrations.accept_statuses(db, [first]) == [True]
    assert await registrations.undo_status(db, first)
    doc = await registrations.get(db, A)
    assert doc is not None and doc["last_status_epoch"] is None and doc["notified"] is False
    assert not await registrations.undo_status(db, first)  # once
    again, later = StatusPoll(A, None, 31, 0), StatusPoll(A, 31, 33, 0)
    assert await registrations.accept_statuses(db, [again]) == [True]
    assert await registrations.accept_statuses(db, [later]) == [True]
    assert not await registrations.undo_status(db, again)  # a later poll was accepted since: kept
    doc = await registrations.get(db, A)
    assert doc is not None and doc["last_status_epoch"] == 33
