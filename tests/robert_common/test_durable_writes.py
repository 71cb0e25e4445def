"""Writes whose success is told to someone outside the system survive the database killed right after
(issue 10, found by tests/test_chaos.py): SecantusDB, like a mongod within its journal commit interval,
acknowledged writes with ``j: false`` and lost the last few milliseconds of them to a SIGKILL (2 of 20
phones answered 201 lost their registration and were refused ever after)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from robert_common.mongo import EmbeddedMongo, mongo_client
from robert_server import contacts, registrations

pytestmark = pytest.mark.slow

WRITERS = 4
KILL_AFTER = 400  # acknowledged writes before the database is killed


async def _register(db: AsyncDatabase, key: bytes) -> None:
    await registrations.create(db, key, 0, None)


async def _report(db: AsyncDatabase, key: bytes) -> None:
    contact = contacts.Contact(b"\x01" * 8, b"\x02", [contacts.Hello(1, 1, b"\x03" * 5, -60)])
    await contacts.store_report(db, key.hex(), [contact], dt.datetime.now(dt.UTC))


async def _stored(db: AsyncDatabase, kind: str) -> set[bytes]:
    """The keys found after the restart (writes in flight at the kill may be there too: no matter)."""
    if kind == "registrations":
        return {d["_id"] async for d in db["registrations"].find({}, {"_id": 1})}
    return {bytes.fromhex(d["report_id"]) async for d in db["contacts"].find({}, {"report_id": 1})}


@pytest.mark.parametrize(("kind", "write"), [("registrations", _register), ("contacts", _report)])
async def test_acknowledged_writes_survive_the_database_killed(
    tmp_path: Path, kind: str, write: Callable[[AsyncDatabase, bytes], Awaitable[None]]
) -> None:
    server = EmbeddedMongo(tmp_path / "mongo")
    server.start()
    client = mongo_client(server.uri, timeout_ms=1000)
    acknowledged: list[bytes] = []
    enough = asyncio.Event()
    try:
        db = client["robert"]

        async def writer(k: int) -> None:
            for i in range(10**6):
                key = bytes([k]) + i.to_bytes(4, "big")
                try:
                    await write(db, key)
                except PyMongoError:
                    return
                acknowledged.append(key)
                if len(acknowledged) >= KILL_AFTER:
                    enough.set()

        tasks = [asyncio.create_task(writer(k)) for k in range(WRITERS)]
        await enough.wait()
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        await asyncio.gather(*tasks)
    finally:
        await client.close()
        server.stop()
    again = EmbeddedMongo(tmp_path / "mongo", port=server.port)
    again.start()
    client = mongo_client(again.uri)
    try:
        stored = await _stored(client["robert"], kind)
    finally:
        await client.close()
        again.stop()
    lost = [k for k in acknowledged if k not in stored]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes lost"
