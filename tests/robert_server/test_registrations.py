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
    assert await registrations.accept_statuses(db, polls[:2]) == [False, False]  # A moved on to 30


async def test_polls_of_one_phone_in_one_batch_pass_one_at_a_time(db) -> None:
    await _phones(db)
    polls = [StatusPoll(A, None, 30, 0), StatusPoll(B, None, 30, 0), StatusPoll(A, None, 30, 0)]
    assert await registrations.accept_statuses(db, polls) == [True, True, False]
    # a minimum gap of 0 in the same epoch: each sees the write of the one before, and passes
    again = [StatusPoll(A, 30, 30, 0), StatusPoll(A, 30, 30, 0)]
    assert await registrations.accept_statuses(db, again) == [True, True]
