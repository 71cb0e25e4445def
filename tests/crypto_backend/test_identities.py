"""Sealed identities against the real embedded database."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from crypto_backend import identities as identities_module
from crypto_backend.identities import COLLECTION, IdentityError, IdentityStore
from crypto_backend.keystore import FileKeyStore
from robert_common.mongo import IN_CHUNK

NOW = dt.datetime(2024, 6, 3, 10, tzinfo=dt.UTC)


@pytest.fixture
def keystore(tmp_path: Path) -> FileKeyStore:
    return FileKeyStore.create(tmp_path / "ks.json", b"pass", scrypt_n=2**10)


async def test_create_seals_the_keys(db: AsyncDatabase, keystore: FileKeyStore) -> None:
    store = IdentityStore(db, keystore)
    k_mac, k_tuples = secrets.token_bytes(32), secrets.token_bytes(32)
    id_a = await store.create(k_mac, k_tuples, NOW)
    assert isinstance(id_a, bytes) and len(id_a) == 5
    doc = await db[COLLECTION].find_one({"_id": id_a})
    assert doc is not None
    assert set(doc) == {"_id", "keys", "kek_version", "created_at"}
    assert doc["kek_version"] == 1 and doc["created_at"] == NOW
    assert k_mac not in doc["keys"] and k_tuples not in doc["keys"]
    assert len(doc["keys"]) == 12 + 64 + 16
    identity = await store.get(id_a)
    assert identity is not None
    assert (identity.id_a, identity.k_mac, identity.k_tuples) == (id_a, k_mac, k_tuples)
    assert k_mac.hex() not in repr(identity) and id_a.hex() not in repr(identity)


async def test_get_many_delete_and_unknown(db: AsyncDatabase, keystore: FileKeyStore) -> None:
    store = IdentityStore(db, keystore)
    keys = {await store.create(bytes([i]) * 32, bytes([i + 100]) * 32, NOW): i for i in range(5)}
    unknown = b"\x00" * 5 if b"\x00" * 5 not in keys else b"\x01" * 5
    found = await store.get_many([*keys, unknown, *keys])
    assert set(found) == set(keys)
    assert all(found[id_a].k_mac == bytes([i]) * 32 for id_a, i in keys.items())
    assert await store.get_many([]) == {}
    assert await store.get(unknown) is None
    first = next(iter(keys))
    assert await store.delete(first) is True
    assert await store.delete(first) is False
    assert await store.get(first) is None


async def test_id_a_is_bound_as_associated_data(db: AsyncDatabase, keystore: FileKeyStore) -> None:
    store = IdentityStore(db, keystore)
    id_a = await store.create(b"m" * 32, b"t" * 32, NOW)
    doc = await db[COLLECTION].find_one({"_id": id_a})
    assert doc is not None
    other = bytes([id_a[0] ^ 1]) + id_a[1:]
    await db[COLLECTION].insert_one({**doc, "_id": other})  # sealed keys moved to another id_A
    with pytest.raises(IdentityError):
        await store.get(other)


async def test_collision_draws_a_new_id(
    db: AsyncDatabase, keystore: FileKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = IdentityStore(db, keystore)
    taken = await store.create(b"a" * 32, b"b" * 32, NOW)
    fresh = bytes([taken[0] ^ 0xFF]) + taken[1:]
    draws = iter([taken, taken, fresh])
    monkeypatch.setattr(identities_module, "new_id_a", lambda: next(draws))
    assert await store.create(b"c" * 32, b"d" * 32, NOW) == fresh
    monkeypatch.setattr(identities_module, "new_id_a", lambda: taken)
    with pytest.raises(IdentityError):
        await store.create(b"c" * 32, b"d" * 32, NOW)
    identity = await store.get(taken)
    assert identity is not None and identity.k_mac == b"a" * 32  # never overwritten


async def test_kek_rotation(db: AsyncDatabase, keystore: FileKeyStore) -> None:
    store = IdentityStore(db, keystore)
    old = await store.create(b"o" * 32, b"p" * 32, NOW)
    keystore.rotate_kek()
    new = await store.create(b"n" * 32, b"q" * 32, NOW)
    docs = {d["_id"]: d["kek_version"] async for d in db[COLLECTION].find({})}
    assert docs == {old: 1, new: 2}
    found = await store.get_many([old, new])
    assert found[old].k_mac == b"o" * 32 and found[new].k_mac == b"n" * 32


async def test_bad_key_sizes_are_refused(db: AsyncDatabase, keystore: FileKeyStore) -> None:
    with pytest.raises(IdentityError):
        await IdentityStore(db, keystore).create(b"short", b"t" * 32, NOW)
    assert await db[COLLECTION].count_documents({}) == 0


async def test_get_many_reads_in_chunks(db: AsyncDatabase, keystore: FileKeyStore) -> None:
    store = IdentityStore(db, keystore)
    created = [await store.create(secrets.token_bytes(32), secrets.token_bytes(32), NOW) for _ in range(120)]
    strangers = [secrets.token_bytes(5) for _ in range(30)]
    found = await store.get_many(created + strangers)
    assert set(found) == set(created)  # 150 ids: six chunks of 25 (robert_common.mongo.IN_CHUNK)
    assert IN_CHUNK < 150


async def test_create_many_seals_each_identity_and_redraws_collisions(
    db: AsyncDatabase, keystore: FileKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = IdentityStore(db, keystore)
    taken = await store.create(b"a" * 32, b"b" * 32, NOW)
    real = identities_module.new_id_a
    draws = iter([taken])  # the first draw collides with an existing identity, the rest are random
    monkeypatch.setattr(identities_module, "new_id_a", lambda: next(draws, None) or real())
    id_as = await store.create_many(40, NOW)
    assert len(id_as) == len(set(id_as)) == 40 and taken not in id_as
    found = await store.get_many(id_as)
    assert set(found) == set(id_as)
    assert len({(i.k_mac, i.k_tuples) for i in found.values()}) == 40  # each its own random keys
    assert (await store.get(taken)).k_mac == b"a" * 32  # type: ignore[union-attr]  # never overwritten
    assert await db[COLLECTION].count_documents({}) == 41
