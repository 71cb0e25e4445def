"""Sealed identities: the ``identities`` collection of the crypto database (PROTOCOL.md section 2).

The one place that reads and writes it. Document::

    _id          bytes(5)   id_A (CSPRNG; a collision is a duplicate key, retried with a new id_A)
    keys         bytes      nonce(12) | AES-256-GCM(KEK, K_A,mac | K_A,tuples) | tag(16), id_A as AAD
    kek_version  int        version of the KEK that sealed ``keys``
    created_at   datetime   creation time (UTC)

Both per-phone keys are sealed together: every reader needs K_A,mac, and one GCM operation is
cheaper than two. Nothing is cached: keys are opened for one call and dropped with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from crypto_backend.keystore import KeyStore, KeyStoreError

log = logging.getLogger(__name__)

COLLECTION = "identities"
ID_A_SIZE = 5
CLIENT_KEY_SIZE = 32
IN_CHUNK = 50  # ids per $in read (see get_many)
IN_FLIGHT = 8  # concurrent $in reads of one get_many
MAX_ID_ATTEMPTS = 16  # 40-bit ids: a second collision in a row means something else is wrong


class IdentityError(Exception):
    """An identity cannot be created or opened (never carries key bytes or id_A)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The per-phone keys of one id_A, opened for the duration of one call."""

    id_a: bytes
    k_mac: bytes
    k_tuples: bytes

    def __repr__(self) -> str:  # never print keys or id_A
        return "Identity(<sealed>)"


def new_id_a() -> bytes:
    """id_A: 5 bytes from the CSPRNG (PROTOCOL.md 2)."""
    return secrets.token_bytes(ID_A_SIZE)


class IdentityStore:
    """Create, read (one or many), and delete sealed identities."""

    def __init__(self, db: AsyncDatabase, keystore: KeyStore) -> None:
        self.collection: AsyncCollection = db[COLLECTION]
        self.keystore = keystore

    async def create(self, k_mac: bytes, k_tuples: bytes, now: dt.datetime) -> bytes:
        """Store K_A,mac and K_A,tuples sealed under the KEK; return the new id_A."""
        if len(k_mac) != CLIENT_KEY_SIZE or len(k_tuples) != CLIENT_KEY_SIZE:
            raise IdentityError("per-phone keys must be 32 bytes each")
        for _ in range(MAX_ID_ATTEMPTS):
            id_a = new_id_a()
            version, sealed = self.keystore.seal(k_mac + k_tuples, id_a)
            doc = {"_id": id_a, "keys": sealed, "kek_version": version, "created_at": now}
            try:
                await self.collection.insert_one(doc)
            except DuplicateKeyError:
                continue
            return id_a
        raise IdentityError("could not draw an unused id_A")

    def _open(self, doc: dict) -> Identity:
        id_a = bytes(doc["_id"])
        try:
            keys = self.keystore.unseal(int(doc["kek_version"]), bytes(doc["keys"]), id_a)
        except (KeyError, TypeError, ValueError, KeyStoreError):
            raise IdentityError("a sealed identity does not open") from None
        return Identity(id_a=id_a, k_mac=keys[:CLIENT_KEY_SIZE], k_tuples=keys[CLIENT_KEY_SIZE:])

    async def get(self, id_a: bytes) -> Identity | None:
        """The opened identity of one id_A, or None when unknown."""
        doc = await self.collection.find_one({"_id": id_a})
        return None if doc is None else self._open(doc)

    async def get_many(self, id_as: Iterable[bytes]) -> dict[bytes, Identity]:
        """Opened identities of many id_A; unknown ones are absent.

        Read with ``$in`` in chunks of IN_CHUNK ids, IN_FLIGHT chunks at a time: one ``$in`` of 1000 ids
        takes seconds on SecantusDB (its cost grows faster than linearly), 20 chunks of 50 a third of
        a second; on MongoDB the chunking costs nothing noticeable.
        """
        wanted = list({bytes(i) for i in id_as})
        if not wanted:
            return {}
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def read(chunk: list[bytes]) -> list[dict]:
            async with gate:
                return await self.collection.find({"_id": {"$in": chunk}}).to_list()

        chunks = [wanted[k : k + IN_CHUNK] for k in range(0, len(wanted), IN_CHUNK)]
        out: dict[bytes, Identity] = {}
        broken = 0
        for docs in await asyncio.gather(*(read(chunk) for chunk in chunks)):
            for doc in docs:
                try:
                    identity = self._open(doc)
                except IdentityError:
                    broken += 1  # one corrupted document must not void a whole matching batch
                    continue
                out[identity.id_a] = identity
        if broken:
            log.error("sealed identities do not open; treated as unknown", extra={"count": broken})
        return out

    async def delete(self, id_a: bytes) -> bool:
        """Forget an identity; False when there was none."""
        result = await self.collection.delete_one({"_id": id_a})
        return result.deleted_count == 1
