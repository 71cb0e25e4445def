"""The database the tests run against (robert_common.mongo): the embedded server answers."""

from __future__ import annotations


async def test_embedded_database_answers(db) -> None:
    await db.things.insert_one({"_id": b"\x01\x02\x03\x04\x05", "n": 1})
    assert (await db.things.find_one({"_id": b"\x01\x02\x03\x04\x05"}))["n"] == 1
