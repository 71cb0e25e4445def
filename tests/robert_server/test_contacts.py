"""The contacts collection on the real database: undoing a stored report, batch claims by chunks."""

from __future__ import annotations

import datetime as dt

from robert_server import contacts
from robert_server.contacts import Contact, Hello

NOW = dt.datetime(2024, 6, 3, 10, tzinfo=dt.UTC)


def _contacts(n: int) -> list[Contact]:
    return [Contact(k.to_bytes(8, "big"), b"\x01", [Hello(1000, 1000, b"mmmmm", -50)]) for k in range(n)]


async def test_delete_report_removes_only_that_reports_batches(db) -> None:
    await contacts.ensure_indexes(db)
    a, b = "a" * 32, "a" * 31 + "b"  # report ids: 32 hex digits
    assert await contacts.store_report(db, a, _contacts(250), NOW) == 3
    assert await contacts.store_report(db, b, _contacts(10), NOW) == 1
    await contacts.delete_report(db, a)
    assert [d["_id"] async for d in contacts.collection(db).find({})] == [f"{b}:0"]
    assert "report_id_1" not in await contacts.collection(db).index_information()


async def test_complete_and_release_many_batches(db) -> None:
    for k in range(40):
        await contacts.store_report(db, f"{k:032x}", _contacts(1), NOW)
    claimed = []
    while group := await contacts.claim_batches(db, "w", NOW, 60, 100):
        assert len(group) <= 25  # one claim is one $in of at most IN_CHUNK ids
        claimed += [b["_id"] for b in group]
    assert len(claimed) == 40
    await contacts.release_batches(db, claimed[:30], "w")
    assert await contacts.complete_batches(db, claimed, "w") == 10  # the 30 released are no longer held
    assert await contacts.pending_batches(db) == 30
