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

from crypto_backend.identities import IdentityStore
from robert_common.clock import ManualClock
from robert_common.mongo import EmbeddedMongo, mongo_client
from robert_common.settings import load_settings
from robert_server import contacts, registrations
from tests.fixtures.crypto import DEFAULT_NOW, make_test_keystore

pytestmark = pytest.mark.slow

WRITERS = 4
KILL_AFTER = 400  # acknowledged writes before the database is killed
Write = Callable[[bytes], Awaitable[bytes]]  # one write for a writer's key; the id it is stored under
_PACKED = contacts.pack_contact(
    contacts.Contact(b"\x01" * 8, b"\x02", [contacts.Hello(1, 1, b"\x03" * 5, -60)])
)


def _writes(kind: str, db: AsyncDatabase, tmp_path: Path) -> Write:
    if kind == "registrations":  # /register, answered 201

        async def register(key: bytes) -> bytes:
            await registrations.create(db, key, 0, None)
            return key

        return register
    if kind == "contacts":  # /report, answered 200
        contact = contacts.Contact(b"\x01" * 8, b"\x02", [contacts.Hello(1, 1, b"\x03" * 5, -60)])

        async def report(key: bytes) -> bytes:
            await contacts.store_report(db, key.hex(), [contact], dt.datetime.now(dt.UTC))
            return f"{key.hex()}:0".encode()

        return report
    if kind == "forwarded":  # a partner's federation batch, answered ACCEPTED once released

        async def forwarded(key: bytes) -> bytes:
            ids = await contacts.store_forwarded(db, 0x22, key.hex(), [_PACKED], dt.datetime.now(dt.UTC))
            await contacts.release_forwarded(db, ids)
            return ids[0].encode()

        return forwarded
    # identities: the crypto database may be another server, so its write is journaled on its own
    settings = load_settings(data_dir=tmp_path, bundle_days=1)
    identities = IdentityStore(
        db, make_test_keystore(tmp_path / "ks.json", ManualClock(DEFAULT_NOW), settings)
    )

    async def identity(key: bytes) -> bytes:
        return await identities.create(b"\x01" * 32, b"\x02" * 32, dt.datetime.now(dt.UTC))

    return identity


async def _stored(db: AsyncDatabase, kind: str) -> set[bytes]:
    if kind == "forwarded":  # stored and released: claimable by the matcher
        cursor = db[contacts.COLLECTION].find({"lease_until": {"$ne": contacts.HELD}}, {"_id": 1})
    else:
        cursor = db[kind].find({}, {"_id": 1})
    ids = [d["_id"] async for d in cursor]
    return {i.encode() if isinstance(i, str) else bytes(i) for i in ids}


@pytest.mark.parametrize("kind", ["registrations", "contacts", "forwarded", "identities"])
async def test_acknowledged_writes_survive_the_database_killed(tmp_path: Path, kind: str) -> None:
    server = EmbeddedMongo(tmp_path / "mongo")
    server.start()
    client = mongo_client(server.uri, timeout_ms=1000)
    acknowledged: list[bytes] = []
    enough = asyncio.Event()
    try:
        write = _writes(kind, client["robert"], tmp_path)

        async def writer(k: int) -> None:
            for i in range(10**6):
                try:
                    stored_as = await write(bytes([k]) + i.to_bytes(4, "big"))
                except PyMongoError:
                    return
                acknowledged.append(stored_as)
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
        stored = await _stored(client["robert"], kind)  # writes in flight at the kill may be there too
    finally:
        await client.close()
        again.stop()
    lost = [k for k in acknowledged if k not in stored]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes lost"
