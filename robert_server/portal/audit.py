"""The portal's audit trail and per-professional limits: ``portal_audit`` and ``portal_audit_counts``.

Nothing here holds a professional's identifier or a code in clear: both are HMAC-SHA256 under the
audit key (a code has only 36^6 values: a plain hash would be reversed in seconds).

``portal_audit``, one document per code issued::

    _id         ObjectId
    pro         str       hex HMAC of the professional's identifier
    at          datetime  UTC, portal clock
    code_hash   str       hex HMAC of the code
    fallback    bool      the professional had logged in with a passkey (provider down)
    profession  str

``portal_audit_counts``, counters that enforce the limits and answer ``robert portal audit`` without
counting records: ``_id`` = "<pro>|<YYYY-MM-DD>" (field ``n``, ``pro``, ``day``) and
"<pro>|<YYYY-MM-DDTHH>" (field ``n``). A claim is a conditional upsert: a counter at its limit does not
match the filter, the upsert then collides with the existing ``_id`` and the claim is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

AUDIT = "portal_audit"
COUNTS = "portal_audit_counts"
_PRO = b"robert-portal-pro\x00"
_CODE = b"robert-portal-code\x00"


def pro_hash(key: bytes, identifier: str) -> str:
    return hmac.new(key, _PRO + identifier.encode(), hashlib.sha256).hexdigest()


def code_hash(key: bytes, code: str) -> str:
    return hmac.new(key, _CODE + code.encode(), hashlib.sha256).hexdigest()


async def ensure_indexes(db: AsyncDatabase) -> None:
    await db[COUNTS].create_index([("day", ASCENDING)])


async def _claim(db: AsyncDatabase, key: str, limit: int, extra: dict[str, Any]) -> bool:
    try:
        await db[COUNTS].update_one(
            {"_id": key, "n": {"$lt": limit}}, {"$inc": {"n": 1}, "$setOnInsert": extra}, upsert=True
        )
    except DuplicateKeyError:
        return False
    return True


async def _unclaim(db: AsyncDatabase, key: str) -> None:
    await db[COUNTS].update_one({"_id": key}, {"$inc": {"n": -1}})


async def claim(db: AsyncDatabase, pro: str, now: dt.datetime, per_hour: int, per_day: int) -> str | None:
    """Count one more code for ``pro``; returns None, or "day"/"hour" when that limit is reached."""
    day_key, hour_key = f"{pro}|{now:%Y-%m-%d}", f"{pro}|{now:%Y-%m-%dT%H}"
    if not await _claim(db, day_key, per_day, {"pro": pro, "day": f"{now:%Y-%m-%d}"}):
        return "day"
    if not await _claim(db, hour_key, per_hour, {}):
        await _unclaim(db, day_key)
        return "hour"
    return None


async def release(db: AsyncDatabase, pro: str, now: dt.datetime) -> None:
    """Give back a claim whose code was not issued."""
    await _unclaim(db, f"{pro}|{now:%Y-%m-%d}")
    await _unclaim(db, f"{pro}|{now:%Y-%m-%dT%H}")


async def record(
    db: AsyncDatabase, key: bytes, pro: str, code: str, now: dt.datetime, *, fallback: bool, profession: str
) -> None:
    await db[AUDIT].insert_one(
        {"pro": pro, "at": now, "code_hash": code_hash(key, code), "fallback": fallback,
         "profession": profession}
    )  # fmt: skip


async def daily_counts(db: AsyncDatabase, since: dt.date, until: dt.date) -> list[tuple[str, str, int]]:
    """(day, hashed professional, codes issued) from ``since`` to ``until`` inclusive."""
    cursor = db[COUNTS].find(
        {"day": {"$gte": since.isoformat(), "$lte": until.isoformat()}}, {"pro": 1, "day": 1, "n": 1}
    )
    rows = [(d["day"], d["pro"], int(d["n"])) async for d in cursor]
    return sorted(rows)


async def records(db: AsyncDatabase, pro: str) -> list[dict[str, Any]]:
    """The audit records of one hashed professional (for an operator's inquiry and the tests)."""
    return [d async for d in db[AUDIT].find({"pro": pro}).sort("at", ASCENDING)]
