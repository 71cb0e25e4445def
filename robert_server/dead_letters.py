"""The ``dead_letters`` collection: contact batches matching gave up on. The one place that touches it.

A batch whose validation or scoring keeps failing (``matcher_max_attempts``) is moved here whole by the
worker (:mod:`robert_server.matching.parking`), so it neither blocks its neighbours nor is retried
forever; ``robert matcher dead-letters`` lists them and ``--retry ID`` puts one back for matching.

Document: the batch document as it was in ``contacts`` (same ``_id``, contacts untouched), plus::

    parked_at    datetime
    reason       str       what failed last: an error type or a crypto service reason, never a message
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

COLLECTION = "dead_letters"


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


async def park(db: AsyncDatabase, batch: Mapping[str, Any], reason: str, now: dt.datetime) -> None:
    """Keep ``batch`` here (idempotent: parking it again changes nothing)."""
    doc = {k: v for k, v in batch.items() if k not in ("lease_until", "lease_owner", "claim")}
    try:
        await collection(db).insert_one({**doc, "parked_at": now, "reason": reason})
    except DuplicateKeyError:
        pass


async def summaries(db: AsyncDatabase, limit: int = 1000) -> list[dict[str, Any]]:
    """The parked batches, oldest first, with the number of their contacts instead of the contacts (a
    batch is at most 100 contacts, and dead letters are rare: read whole)."""
    out = []
    async for doc in collection(db).find({}).sort("parked_at", 1).limit(limit):
        doc["contacts"] = len(doc.get("contacts") or [])
        out.append(doc)
    return out


async def get(db: AsyncDatabase, batch_id: str) -> dict[str, Any] | None:
    return await collection(db).find_one({"_id": batch_id})


async def delete(db: AsyncDatabase, batch_id: str) -> bool:
    result = await collection(db).delete_one({"_id": batch_id})
    return result.deleted_count == 1
