"""Sealed identities: the ``identities`` collection of the crypto database (PROTOCOL.md section 2).

The one place that reads and writes it. Document::

    _id          bytes(5)   id_A (CSPRNG; a collision is a duplicate key, retried with a new id_A)
    keys         bytes      nonce(12) | AES-256-GCM(KEK, K_A,mac | K_A,tuples) | tag(16), id_A as AAD
    kek_version  int        version of the KEK that sealed ``keys``
    created_at   datetime   creation time (UTC)

Both per-phone keys are sealed together: every reader needs K_A,mac, and one GCM operation is
cheaper than two. Nothing is cached: keys are opened for one call and dropped with it.

After a KEK rotation, :func:`reseal` moves every identity to the new KEK and then retires the old
versions (``robert keys reseal``, see crypto_backend/cli.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from prometheus_client import Counter, Gauge
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from crypto_backend.keystore import KeyStore, KeyStoreError
from robert_common.mongo import durable, find_by_ids

log = logging.getLogger(__name__)

COLLECTION = "identities"
ID_A_SIZE = 5
CLIENT_KEY_SIZE = 32
IN_FLIGHT = 8  # concurrent $in reads of one get_many
MAX_ID_ATTEMPTS = 16  # 40-bit ids: a second collision in a row means something else is wrong

RESEALED = Counter("robert_crypto_resealed_total", "Identities re-sealed under a newer KEK")
RESEAL_BROKEN = Counter("robert_crypto_reseal_broken_total", "Identities that did not open during a re-seal")
RESEAL_LEFT = Gauge(
    "robert_crypto_reseal_pending", "Identities found under an old KEK in the last re-seal pass"
)


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
            try:  # journaled: the phone is answered 201 (robert_common.mongo.durable)
                await durable(self.collection).insert_one(doc)
            except DuplicateKeyError:
                continue
            return id_a
        raise IdentityError("could not draw an unused id_A")

    async def create_many(self, count: int, now: dt.datetime) -> list[bytes]:
        """``count`` new identities with random per-phone keys, stored with one ``insert_many``; their
        id_A (seeding: the keys are never known outside this service). A colliding id_A is redrawn."""
        out: list[bytes] = []
        for _ in range(MAX_ID_ATTEMPTS):
            keys = secrets.token_bytes(2 * CLIENT_KEY_SIZE * count)
            ids = [new_id_a() for _ in range(count)]
            docs = []
            for k, id_a in enumerate(ids):
                version, sealed = self.keystore.seal(keys[64 * k : 64 * k + 64], id_a)
                docs.append({"_id": id_a, "keys": sealed, "kek_version": version, "created_at": now})
            try:
                await self.collection.insert_many(docs, ordered=False)
                failed: set[bytes] = set()
            except BulkWriteError as e:
                errors = e.details.get("writeErrors", [])
                if any(err.get("code") != 11000 for err in errors):
                    raise
                failed = {ids[err["index"]] for err in errors}
            out += [id_a for id_a in ids if id_a not in failed]
            count = len(failed)
            if not count:
                return out
        raise IdentityError("could not draw unused id_A")

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

        Read with chunked ``$in`` (:func:`find_by_ids`), IN_FLIGHT chunks at a time.
        """
        wanted = list({bytes(i) for i in id_as})
        out: dict[bytes, Identity] = {}
        broken = 0
        for doc in await find_by_ids(self.collection, wanted, in_flight=IN_FLIGHT):
            try:
                identity = self._open(doc)
            except IdentityError:
                broken += 1  # one corrupted document must not void a whole matching batch
                continue
            out[identity.id_a] = identity
        if broken:
            log.error("sealed identities do not open; treated as unknown", extra={"count": broken})
        return out

    async def reseal_page(self, after: bytes, limit: int) -> ResealPage:
        """Re-seal up to ``limit`` identities with ``_id > after`` sealed under an older KEK than the
        current one (see :class:`ResealPage`).

        Each write is conditional on the old version (``_id`` then ``kek_version`` in the filter): an
        identity is sealed anew at most once per version, whatever crashes or runs beside it, and
        one never moves to an older KEK (``$lt``: another re-seal may already be on a newer one).
        """
        current = self.keystore.kek_version
        docs = (
            await self.collection.find({"_id": {"$gt": after}, "kek_version": {"$lt": current}})
            .sort("_id", 1)
            .limit(limit)
            .to_list()
        )
        if not docs:
            return ResealPage(None, 0, 0, 0)
        writes, broken = [], 0
        for doc in docs:
            try:
                identity = self._open(doc)
            except IdentityError:
                broken += 1  # left under its old KEK: the old version is then not retired
                continue
            version, sealed = self.keystore.seal(identity.k_mac + identity.k_tuples, identity.id_a)
            writes.append(
                UpdateOne(
                    {"_id": identity.id_a, "kek_version": doc["kek_version"]},
                    {"$set": {"keys": sealed, "kek_version": version}},
                )
            )
        resealed = 0
        if writes:
            result = await self.collection.bulk_write(writes, ordered=False)
            resealed = result.modified_count
        return ResealPage(bytes(docs[-1]["_id"]), len(writes), resealed, broken)

    async def delete(self, id_a: bytes) -> bool:
        """Forget an identity; False when there was none."""
        result = await self.collection.delete_one({"_id": id_a})
        return result.deleted_count == 1

    async def list_created_before(self, after: bytes, before: dt.datetime, limit: int) -> list[bytes]:
        """Up to ``limit`` id_A greater than ``after`` (all from the first if empty), in order, of
        identities created before ``before``: the reconciliation's pages (no key is opened).

        ``_id`` first in the filter: a range scan of the id index, a page at a time.
        """
        query = {"_id": {"$gt": after}, "created_at": {"$lt": before}}  # every id_A is after b""
        cursor = self.collection.find(query, {"_id": 1}).sort("_id", 1).hint([("_id", 1)]).limit(limit)
        return [bytes(d["_id"]) async for d in cursor]


class ResealPage(NamedTuple):
    last: bytes | None  # the last _id read (where the next page starts), None past the end
    sealed: int  # KEK seal operations made
    resealed: int  # identities written under the current KEK (fewer if one changed meanwhile)
    broken: int  # identities that did not open


@dataclass
class ResealReport:
    sealed: int = 0  # KEK seal operations made by this run
    resealed: int = 0  # identities moved to the current KEK by this run
    broken: int = 0  # identities that did not open (left as they were)
    passes: int = 0
    retired: list[int] | None = None  # KEK versions destroyed at the end


async def reseal(
    identities: IdentityStore,
    *,
    batch: int,
    rate: float,
    retire_after: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> ResealReport:
    """Move every identity to the current KEK, then retire the older KEK versions (PROTOCOL.md 2).

    Passes over the collection by ``_id`` pages of ``batch``, at most ``rate`` identities a second
    (0: no limit), until a whole pass finds none under an older KEK: that count, not an assumption,
    allows retirement. Retirement also waits until ``retire_after`` seconds since the start, so that
    running crypto services have reloaded the store and seal with the new KEK (they check every 10 s),
    and one more pass then catches what they sealed meanwhile. Resumable: a run killed at any point
    leaves identities under either version, both of which open; the next run skips the done ones.
    An identity that does not open keeps its old KEK alive (error in the log, nothing retired).
    """
    report = ResealReport()
    started = monotonic()
    current = identities.keystore.kek_version
    total = await identities.collection.estimated_document_count()
    log.info("re-seal started", extra={"kek_version": current, "identities": total})
    while True:
        report.passes += 1
        pass_started = monotonic()
        found = await _reseal_pass(identities, report, batch, rate, total, monotonic)
        RESEAL_LEFT.set(found)
        if report.broken:
            log.error(
                "re-seal left identities that do not open; old KEK versions are kept",
                extra={"broken": report.broken},
            )
            return report
        if found:
            continue  # something was re-sealed: count again
        wait = retire_after - (pass_started - started)
        if wait <= 0:
            break  # a whole pass, begun after the grace period, found nothing under an older KEK
        log.info("re-seal waits before retiring old KEKs", extra={"seconds": round(wait, 1)})
        await asyncio.sleep(wait)
    store = identities.keystore
    store.reload()
    if store.kek_version != current:
        log.warning(
            "the KEK was rotated again during the re-seal; run it again", extra={"kek_version": current}
        )
        report.retired = []
        return report
    report.retired = [v for v in store.kek_versions() if v < current]
    for version in report.retired:
        store.retire_kek(version)
    log.info(
        "re-seal finished",
        extra={"resealed": report.resealed, "passes": report.passes, "retired": report.retired},
    )
    return report


async def _reseal_pass(
    identities: IdentityStore,
    report: ResealReport,
    batch: int,
    rate: float,
    total: int,
    monotonic: Callable[[], float],
) -> int:
    """One pass over all ``_id``: identities found under an older KEK (re-sealed or broken)."""
    after, found = b"", 0
    while True:
        page_started = monotonic()
        last, sealed, resealed, broken = await identities.reseal_page(after, batch)
        if last is None:
            return found
        after = last
        found += resealed + broken
        report.sealed += sealed
        report.resealed += resealed
        report.broken += broken
        RESEALED.inc(resealed)
        RESEAL_BROKEN.inc(broken)
        log.info(
            "re-seal progress",
            extra={"resealed": report.resealed, "identities": total, "broken": report.broken},
        )
        if rate > 0:
            await asyncio.sleep(max(0.0, (resealed + broken) / rate - (monotonic() - page_started)))
