"""The ``federation_received`` collection: the federation batches this server accepted, by sender and
batch id (the receiver's deduplication). The one place that touches it.

Receiving a batch is three idempotent steps (:mod:`.service`): :func:`begin` records it ``storing``,
its contacts are stored held (unclaimable), :func:`finish` marks it ``stored``; then the contacts are
released to the matching worker. A delivery retried after a crash anywhere finds the record and
either redoes the steps (``storing``: nothing was matched yet, as the contacts are still held) or
answers "duplicate" (``stored``). Records are purged after the retention period (the sender never
sends a batch older than that).

Document::

    _id          str        "<sender CC as 2 hex digits>/<batch id>"
    state        str        "storing" | "stored"
    digest       bytes      SHA-256 of the batch's contacts: the same id with other contacts is refused
    contacts     int        contacts in the batch
    received_at  datetime
"""

from __future__ import annotations

import datetime as dt
from enum import Enum

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from robert_common.mongo import id_chunks

COLLECTION = "federation_received"
STORING = "storing"
STORED = "stored"


class Begun(Enum):
    NEW = "new"  # first delivery: store it
    UNFINISHED = "unfinished"  # an earlier delivery stopped midway: store it again (idempotent)
    DONE = "done"  # stored before: a duplicate
    CONFLICT = "conflict"  # the same id was stored with other contacts


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


def record_id(sender: int, batch_id: str) -> str:
    return f"{sender:02x}/{batch_id}"


async def begin(db: AsyncDatabase, key: str, digest: bytes, contacts: int, now: dt.datetime) -> Begun:
    """Record a batch as being stored, or tell what an earlier delivery of the same id left."""
    doc = {"_id": key, "state": STORING, "digest": digest, "contacts": contacts, "received_at": now}
    try:
        await collection(db).insert_one(doc)
        return Begun.NEW
    except DuplicateKeyError:
        pass
    found = await collection(db).find_one({"_id": key})
    if found is None:  # purged meanwhile: as good as new
        return await begin(db, key, digest, contacts, now)
    if bytes(found["digest"]) != digest:
        return Begun.CONFLICT
    return Begun.DONE if found["state"] == STORED else Begun.UNFINISHED


async def finish(db: AsyncDatabase, key: str) -> None:
    await collection(db).update_one({"_id": key}, {"$set": {"state": STORED}})


async def purge(db: AsyncDatabase, before: dt.datetime, page: int = 1000) -> int:
    """Delete the records received before ``before`` (past the retention period); how many."""
    deleted = 0
    after = ""
    while True:
        query = {"_id": {"$gt": after}} if after else {}
        docs = await collection(db).find(query, {"received_at": 1}).sort("_id", 1).limit(page).to_list()
        old = [d["_id"] for d in docs if _aware(d["received_at"]) < before]
        for chunk in id_chunks(old):
            result = await collection(db).delete_many({"_id": {"$in": chunk}})
            deleted += result.deleted_count
        if len(docs) < page:
            return deleted
        after = docs[-1]["_id"]


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
