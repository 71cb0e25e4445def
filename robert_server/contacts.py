"""The ``contacts`` collection: uploaded contacts waiting for matching. The one place that touches it.

``/report`` stores a report as one or more batch documents of at most ``BATCH_SIZE`` contacts; the
matching worker claims batches with a lease, processes them, and deletes them. HELLOs are stored
packed (fixed-size big-endian records) to keep documents small and fast to encode.

Batch document::

    _id           str       "<report_id>:<index>": a retried upload of the same report cannot duplicate
    report_id     str       opaque id of the report (derived from the code, never the code itself)
    received_at   datetime
    contacts      [ {ebid: bytes(8), ecc: bytes(1), n: int,
                     t: bytes(4n)  timeCollectedOnDevice, uint32 BE,
                     th: bytes(2n) timeFromHelloMessage, uint16 BE,
                     mac: bytes(5n),
                     rssi: bytes(2n) rssiCalibrated, int16 BE} ]
    origin        int       only on contacts a partner country forwarded (robert_server.federation): the
                            sender's country code. Such batches are matched like local ones but are no
                            local report, and their contacts of another country are never forwarded again
    lease_until   datetime  unclaimed batches have a lease in the past; HELD: stored, not yet released
    lease_owner   str | None
    claim         str       id of the claim that took it last (to read back what one claim took)
    attempts      int
"""

from __future__ import annotations

import datetime as dt
import random
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from robert_common.mongo import IN_CHUNK, durable, find_by_ids, id_chunks

COLLECTION = "contacts"
BATCH_SIZE = 100
UNCLAIMED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HELD = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)  # stored but not claimable yet (forwarded batches)
FORWARDED_PREFIX = "fed/"


@dataclass(frozen=True, slots=True)
class Hello:
    time_collected: int  # NTP seconds, uint32
    time_from_hello: int  # uint16
    mac: bytes  # 5 bytes
    rssi: int  # rssiCalibrated


@dataclass(frozen=True, slots=True)
class Contact:
    ebid: bytes  # 8 bytes
    ecc: bytes  # 1 byte
    hellos: Sequence[Hello]


def pack_contact(c: Contact) -> dict[str, Any]:
    n = len(c.hellos)
    return {
        "ebid": c.ebid,
        "ecc": c.ecc,
        "n": n,
        "t": struct.pack(f">{n}I", *(h.time_collected for h in c.hellos)),
        "th": struct.pack(f">{n}H", *(h.time_from_hello for h in c.hellos)),
        "mac": b"".join(h.mac for h in c.hellos),
        "rssi": struct.pack(f">{n}h", *(h.rssi for h in c.hellos)),
    }


def unpack_contact(d: dict[str, Any]) -> Contact:
    n = d["n"]
    t = struct.unpack(f">{n}I", d["t"])
    th = struct.unpack(f">{n}H", d["th"])
    rssi = struct.unpack(f">{n}h", d["rssi"])
    mac = d["mac"]
    hellos = [Hello(t[i], th[i], mac[5 * i : 5 * i + 5], rssi[i]) for i in range(n)]
    return Contact(d["ebid"], d["ecc"], hellos)


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


async def ensure_indexes(db: AsyncDatabase) -> None:
    # claim_batches: every claim of every matching worker looks for the oldest expired leases.
    await collection(db).create_index([("lease_until", ASCENDING)])
    # No index on report_id: delete_report (a failed upload, rare) reads the _id range of the report.
    if "report_id_1" in await collection(db).index_information():
        await collection(db).drop_index("report_id_1")  # made by older versions


async def store_report(
    db: AsyncDatabase, report_id: str, contacts: Sequence[Contact], received_at: dt.datetime
) -> int:
    """Store a report's contacts durably; returns the number of batch documents.

    Idempotent: storing the same report_id again (a retried upload) inserts nothing new.
    """
    return await store_packed(db, report_id, [pack_contact(c) for c in contacts], received_at)


def batch_id(report_id: str, index: int) -> str:
    """The id of the ``index``-th batch (of ``BATCH_SIZE`` contacts) of a report."""
    return f"{report_id}:{index}"


async def received_at(db: AsyncDatabase, report_id: str) -> dt.datetime | None:
    """When the contacts of ``report_id`` were stored first (a retry stores nothing again); None when
    it had none. Its KPI day (robert_server/api/report.py)."""
    doc = await collection(db).find_one({"_id": batch_id(report_id, 0)}, {"received_at": 1})
    return None if doc is None else doc["received_at"]


async def _insert_batches(
    coll: AsyncCollection,
    report_id: str,
    packed: Sequence[dict[str, Any]],
    received_at: dt.datetime,
    lease_until: dt.datetime,
    **fields: Any,
) -> list[str]:
    """Store ``packed`` contacts as batches of ``BATCH_SIZE`` (with ``fields``); a batch stored already
    is left as it is (a retry stores nothing twice). The batch ids."""
    docs = [
        {
            "_id": batch_id(report_id, i // BATCH_SIZE),
            "report_id": report_id,
            **fields,
            "received_at": received_at,
            "contacts": list(packed[i : i + BATCH_SIZE]),
            "lease_until": lease_until,
            "lease_owner": None,
            "attempts": 0,
        }
        for i in range(0, len(packed), BATCH_SIZE)
    ]
    if docs:
        try:
            await coll.insert_many(docs, ordered=False)
        except BulkWriteError as e:
            if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                raise  # anything but "already stored" is a real failure
    return [d["_id"] for d in docs]


async def store_packed(
    db: AsyncDatabase, report_id: str, packed: Sequence[dict[str, Any]], received_at: dt.datetime
) -> int:
    """:func:`store_report` of contacts already packed (:func:`pack_contact`)."""
    # Journaled: the phone is answered 200.
    return len(await _insert_batches(durable(collection(db)), report_id, packed, received_at, UNCLAIMED))


async def store_forwarded(
    db: AsyncDatabase, origin: int, key: str, packed: Sequence[dict[str, Any]], received_at: dt.datetime
) -> list[str]:
    """Store contacts a partner country forwarded (federation batch ``key``; packed as
    :func:`pack_contact` does), HELD: no worker claims them
    until :func:`release_forwarded`. Idempotent like :func:`store_report`; returns the batch ids.

    Held, a batch cannot be matched and deleted before the receiver has recorded the federation batch
    as stored, so a delivery retried at any moment never stores its contacts a second time."""
    report_id = FORWARDED_PREFIX + key
    return await _insert_batches(collection(db), report_id, packed, received_at, HELD, origin=origin)


async def release_forwarded(db: AsyncDatabase, batch_ids: Sequence[str]) -> None:
    """Make held forwarded batches claimable (idempotent: released or matched ones are left alone).

    The partner is told ACCEPTED after this and drops its copy: journaled (``j: true``), which also
    makes the journal hold the batch's insert before it."""
    for chunk in id_chunks(batch_ids):
        await durable(collection(db)).update_many(
            {"_id": {"$in": chunk}, "lease_until": HELD}, {"$set": {"lease_until": UNCLAIMED}}
        )


def forwarded_ids(key: str, contacts_count: int) -> list[str]:
    """The batch ids :func:`store_forwarded` gives a federation batch of ``contacts_count`` contacts."""
    return [
        batch_id(FORWARDED_PREFIX + key, i) for i in range((contacts_count + BATCH_SIZE - 1) // BATCH_SIZE)
    ]


async def delete_report(db: AsyncDatabase, report_id: str) -> None:
    """Undo a store_report (the upload failed after storing, e.g. the code was consumed meanwhile).

    Its batches are the ``_id`` range "<report_id>:" to "<report_id>;" (";" follows ":"): read on the
    ``_id`` index, no index of its own."""
    await collection(db).delete_many({"_id": {"$gte": f"{report_id}:", "$lt": f"{report_id};"}})


# --- matching worker (issue 5): claims with a lease (several batches at a time), completion ------

CLAIM_CANDIDATES = 8  # batches looked at per claim: enough that concurrent workers rarely collide


async def claim_batch(
    db: AsyncDatabase, owner: str, now: dt.datetime, lease_seconds: float
) -> dict[str, Any] | None:
    """Claim one batch whose lease has expired (or that was never claimed) and return it, or None."""
    claimed = await claim_batches(db, owner, now, lease_seconds, 1)
    return claimed[0] if claimed else None


async def claim_batches(
    db: AsyncDatabase, owner: str, now: dt.datetime, lease_seconds: float, limit: int
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` batches whose lease has expired (or that were never claimed); [] if none.

    One conditional ``update_many`` over randomly chosen candidates: each batch is updated only while
    its lease is still in the past, atomically per document, so of two workers that saw the same batch
    exactly one takes it. The claim writes a fresh ``claim`` id, by which the batches taken are then
    read (three operations for the whole group). The lease lets another worker take a batch over if
    this one dies.
    """
    cursor = (
        collection(db)
        .find({"lease_until": {"$lt": now}}, {"_id": 1})
        .sort("lease_until", ASCENDING)
        .limit(max(CLAIM_CANDIDATES, 2 * limit))
    )
    candidates = [doc["_id"] for doc in await cursor.to_list()]
    random.shuffle(candidates)  # concurrent workers start on different batches
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    limit = min(limit, IN_CHUNK)  # one claim is one $in
    while candidates:
        ids, candidates = candidates[:limit], candidates[limit:]
        claim = uuid.uuid4().hex
        result = await collection(db).update_many(
            {"_id": {"$in": ids}, "lease_until": {"$lt": now}},
            {
                "$set": {"lease_until": lease_until, "lease_owner": owner, "claim": claim},
                "$inc": {"attempts": 1},
            },
        )
        if result.modified_count:
            return await find_by_ids(collection(db), ids, also={"claim": claim})
    return []


async def complete_batch(db: AsyncDatabase, batch_id: str, owner: str) -> bool:
    """Delete a processed batch if ``owner`` still holds it; False when another worker took it over."""
    result = await collection(db).delete_one({"_id": batch_id, "lease_owner": owner})
    return result.deleted_count == 1


async def complete_batches(db: AsyncDatabase, batch_ids: Sequence[str], owner: str) -> int:
    """Delete processed batches that ``owner`` still holds, in one operation; the number deleted.

    Which ones were deleted is known only when all were: call it while the lease is certainly held,
    and :func:`complete_batch` one by one otherwise.
    """
    deleted = 0
    for chunk in id_chunks(batch_ids):
        result = await collection(db).delete_many({"_id": {"$in": chunk}, "lease_owner": owner})
        deleted += result.deleted_count
    return deleted


async def release_batch(db: AsyncDatabase, batch_id: str, owner: str) -> None:
    """Give a claimed batch back at once (e.g. the crypto service is down), if ``owner`` still holds it."""
    await release_batches(db, [batch_id], owner)


async def release_batches(db: AsyncDatabase, batch_ids: Sequence[str], owner: str) -> None:
    """Give claimed batches back at once, those that ``owner`` still holds (one operation per chunk). The
    claim's attempt is given back too: nothing was tried (a crypto outage must not make batches dead
    letters)."""
    for chunk in id_chunks(batch_ids):
        await collection(db).update_many(
            {"_id": {"$in": chunk}, "lease_owner": owner},
            {"$set": {"lease_until": UNCLAIMED, "lease_owner": None}, "$inc": {"attempts": -1}},
        )


async def restore_batch(db: AsyncDatabase, batch: dict[str, Any]) -> None:
    """Put a batch taken out of matching (a dead letter) back, unclaimed, with no attempt counted.
    Idempotent: a batch already back is left as it is."""
    doc = {k: v for k, v in batch.items() if k in ("_id", "report_id", "received_at", "contacts", "origin")}
    try:
        await collection(db).insert_one({**doc, "lease_until": UNCLAIMED, "lease_owner": None, "attempts": 0})
    except DuplicateKeyError:
        pass


async def pending_batches(db: AsyncDatabase) -> int:
    """Number of batches waiting or in progress (tests, CLI; a count, not for hot paths)."""
    return await collection(db).count_documents({})
