"""The ``codes`` collection: the one place that reads and writes it (issue 4, PROTOCOL.md 7).

Only an HMAC of each normalised code is stored (see :mod:`.pepper`). Document::

    _id             bytes(32)  HMAC-SHA256(pepper, code)  (JWT codes: HMAC of kid and jti)
    kind            "short" | "long" | "jwt"
    valid_from      datetime   UTC
    valid_until     datetime   UTC, exclusive
    lot             str | None  lot id of a long-code lot
    issuer          str        issuer name (JWT codes: the signing key id)
    issued_at       datetime
    state           "unused" | "reserved" | "used" | "revoked" | "expired"
    reservation     str        token of the current reservation (state "reserved")
    reserved_until  datetime   end of the current reservation (NEVER when there is none)
    used_at         datetime   when /report consumed it

Every change of state is one conditional ``update_one`` by ``_id`` (never ``find_one_and_update``).
Filters avoid ``$or`` (a full scan on SecantusDB even with ``_id``): ``reserved_until`` is always set,
to :data:`NEVER` when the code is not held, so "unused or lapsed" is one range condition.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from robert_common.mongo import durable, id_chunks

COLLECTION = "codes"
UNUSED, RESERVED, USED, REVOKED, EXPIRED = "unused", "reserved", "used", "revoked", "expired"
NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # reserved_until of a code nobody holds
_FREE = {"state": UNUSED, "reserved_until": NEVER}


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


async def ensure_indexes(db: AsyncDatabase) -> None:
    """The hourly purge (mark_expired, delete_old) reads ``valid_until``; every other access is by ``_id``.
    Codes are written a few times each (issue, reserve, confirm): the index costs little there."""
    await collection(db).create_index([("valid_until", ASCENDING)])


def new_code(
    key: bytes, kind: str, valid: tuple[dt.datetime, dt.datetime], *, issuer: str, now: dt.datetime,
    lot: str | None = None, state: str = UNUSED,
) -> dict[str, Any]:  # fmt: skip
    return {
        "_id": key, "kind": kind, "valid_from": valid[0], "valid_until": valid[1], "lot": lot,
        "issuer": issuer, "issued_at": now, "state": state, "reserved_until": NEVER,
    }  # fmt: skip


async def insert_one(db: AsyncDatabase, doc: dict[str, Any]) -> bool:
    """Store one code; False if a code with that HMAC already exists (the caller draws another)."""
    try:
        await durable(collection(db)).insert_one(doc)  # the code is handed to a doctor
    except DuplicateKeyError:
        return False
    return True


async def insert_many(db: AsyncDatabase, docs: list[dict[str, Any]]) -> set[bytes]:
    """Store a batch of codes; returns the keys that already existed (not inserted)."""
    if not docs:
        return set()
    try:
        await durable(collection(db)).insert_many(docs, ordered=False)
    except BulkWriteError as e:
        dup = {err["op"]["_id"] for err in e.details.get("writeErrors", []) if err.get("code") == 11000}
        if len(dup) != len(e.details.get("writeErrors", [])):
            raise
        return dup
    return set()


async def get(db: AsyncDatabase, key: bytes) -> dict[str, Any] | None:
    return await collection(db).find_one({"_id": key})


async def reserve(
    db: AsyncDatabase, key: bytes, kind: str, now: dt.datetime, until: dt.datetime, token: str
) -> bool:
    """Take an unused code valid at ``now`` (or one whose reservation has lapsed) until ``until``.

    One atomic conditional update: of concurrent calls for one code, exactly one modifies it.
    """
    result = await collection(db).update_one(
        {
            "_id": key, "kind": kind, "valid_from": {"$lte": now}, "valid_until": {"$gt": now},
            "state": {"$in": [UNUSED, RESERVED]}, "reserved_until": {"$lte": now},
        },
        {"$set": {"state": RESERVED, "reservation": token, "reserved_until": until}},
    )  # fmt: skip
    return result.modified_count == 1


async def confirm(db: AsyncDatabase, key: bytes, token: str, now: dt.datetime) -> bool:
    """Mark the code used, if ``token`` still holds it (a lapsed but untaken reservation still counts)."""
    result = await collection(db).update_one(
        {"_id": key, "state": RESERVED, "reservation": token},
        {"$set": {"state": USED, "used_at": now, "reserved_until": NEVER}, "$unset": {"reservation": ""}},
    )
    return result.modified_count == 1


async def release(db: AsyncDatabase, key: bytes, token: str) -> bool:
    """Give the code back (the upload failed), if ``token`` still holds it."""
    result = await collection(db).update_one(
        {"_id": key, "state": RESERVED, "reservation": token},
        {"$set": _FREE, "$unset": {"reservation": ""}},
    )
    return result.modified_count == 1


async def revoke(db: AsyncDatabase, key: bytes, issuer: str | None = None) -> bool:
    """Revoke a code not yet used (an upload holding it will fail to confirm); with ``issuer``, only a
    code that issuer issued."""
    query: dict[str, Any] = {"_id": key}
    if issuer is not None:
        query["issuer"] = issuer
    query["state"] = {"$in": [UNUSED, RESERVED]}
    result = await collection(db).update_one(
        query,
        {"$set": {"state": REVOKED, "reserved_until": NEVER}, "$unset": {"reservation": ""}},
    )
    return result.modified_count == 1


async def mark_expired(db: AsyncDatabase, now: dt.datetime) -> dict[tuple[dt.date, str], int]:
    """Mark unused codes past their validity ``expired``; returns how many per (UTC day of expiry, kind).

    Each group is one conditional ``update_many``, so concurrent purges never count a code twice.
    """
    groups: dict[tuple[dt.date, str], list[bytes]] = defaultdict(list)
    query = {
        "valid_until": {"$lte": now},
        "state": {"$in": [UNUSED, RESERVED]},
        "reserved_until": {"$lte": now},
    }
    async for doc in collection(db).find(query, {"kind": 1, "valid_until": 1}):
        groups[(doc["valid_until"].astimezone(dt.UTC).date(), doc["kind"])].append(doc["_id"])
    counts: dict[tuple[dt.date, str], int] = {}
    for group, keys in groups.items():
        for chunk in id_chunks(keys):
            result = await collection(db).update_many(
                {"_id": {"$in": chunk}, "state": {"$in": [UNUSED, RESERVED]}},
                {"$set": {"state": EXPIRED, "reserved_until": NEVER}, "$unset": {"reservation": ""}},
            )
            counts[group] = counts.get(group, 0) + result.modified_count
    return counts


async def delete_old(db: AsyncDatabase, states: list[str], before: dt.datetime) -> int:
    """Delete codes in ``states`` whose validity ended before ``before``."""
    # The indexed field first: SecantusDB's planner tries the fields in the order given.
    result = await collection(db).delete_many({"valid_until": {"$lte": before}, "state": {"$in": states}})
    return result.deleted_count
