"""The ``foreign_contacts`` collection: the federation outbox. The one place that touches it.

The matching worker writes here, in the step that validates a batch of uploaded contacts, the contacts
whose ECC names another country (PROTOCOL.md 8 step 1): one document per (uploaded batch, country). The
forwarder (:mod:`.forwarder`) delivers each document to that country's server as one federation batch
whose id is the document's ``_id``, and deletes it once the partner answered (accepted, duplicate or
refused). A document is never changed after it is written, so a batch sent again after any crash is
the same batch, which the receiver deduplicates by id: each HELLO reaches its country exactly once.

Document::

    _id           str       "<CC as 2 hex digits>/<uploaded batch id>": the outbox is read country by
                            country with a range of _id (no secondary index)
    country_code  int
    created_at    datetime
    contacts      [packed contact]   as :mod:`robert_server.contacts` stores them
    n             int       contacts in it
    hellos        int       HELLOs in those contacts
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from robert_common.mongo import id_chunks

COLLECTION = "foreign_contacts"
MAX_COUNTRY = 0xFF


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


def prefix(country_code: int) -> str:
    return f"{country_code:02x}/"


def _range(country_code: int) -> dict[str, str]:
    # "/" is followed by "0" in ASCII: every id of a country sorts in [cc/, cc0).
    return {"$gte": prefix(country_code), "$lt": f"{country_code:02x}0"}


def outbox_id(country_code: int, batch_id: str) -> str:
    return prefix(country_code) + batch_id


async def store(
    db: AsyncDatabase,
    batch_id: str,
    foreign: Sequence[tuple[int, dict[str, Any]]],
    created_at: dt.datetime,
) -> int:
    """Keep an uploaded batch's contacts of other countries, ``(country code, packed contact)``, grouped
    by country; returns the number of documents. Idempotent: a re-run of the batch (a worker that died
    before deleting it) adds nothing."""
    by_country: dict[int, list[dict[str, Any]]] = {}
    for cc, packed in foreign:
        by_country.setdefault(cc, []).append(packed)
    docs = [
        {
            "_id": outbox_id(cc, batch_id),
            "country_code": cc,
            "created_at": created_at,
            "contacts": packed,
            "n": len(packed),
            "hellos": sum(c["n"] for c in packed),
        }
        for cc, packed in sorted(by_country.items())
    ]
    if not docs:
        return 0
    try:
        await collection(db).insert_many(docs, ordered=False)
    except BulkWriteError as e:
        if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
            raise  # anything but "already stored" is a real failure
    return len(docs)


async def countries(db: AsyncDatabase) -> list[int]:
    """The country codes with documents waiting: one ``_id`` range read per country present (a skip
    scan over the _id index, never a scan of the documents)."""
    found: list[int] = []
    cc = 0
    while cc <= MAX_COUNTRY:
        doc = await collection(db).find_one({"_id": {"$gte": prefix(cc)}}, {"_id": 1}, sort=[("_id", 1)])
        if doc is None:
            break
        cc = int(doc["_id"][:2], 16)
        found.append(cc)
        cc += 1
    return found


async def pending(db: AsyncDatabase, country_code: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` documents of one country, oldest id first."""
    cursor = collection(db).find({"_id": _range(country_code)}).sort("_id", 1).limit(limit)
    return await cursor.to_list()


async def expired(
    db: AsyncDatabase, country_code: int, before: dt.datetime, page: int = 1000
) -> list[dict[str, Any]]:
    """The ids, created_at and counts of one country's documents created before ``before``."""
    out: list[dict[str, Any]] = []
    after = ""
    while True:
        query = {"_id": {**_range(country_code), **({"$gt": after} if after else {})}}
        cursor = collection(db).find(query, {"created_at": 1, "n": 1, "hellos": 1}).sort("_id", 1).limit(page)
        docs = await cursor.to_list()
        out += [d for d in docs if _aware(d["created_at"]) < before]
        if len(docs) < page:
            return out
        after = docs[-1]["_id"]


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


async def delete(db: AsyncDatabase, ids: Sequence[str]) -> None:
    """Delete delivered (or dropped) documents."""
    for part in id_chunks(ids):
        await collection(db).delete_many({"_id": {"$in": part}})


async def count(db: AsyncDatabase) -> int:
    """Documents waiting (tests, CLI; a count, not for hot paths)."""
    return await collection(db).count_documents({})
