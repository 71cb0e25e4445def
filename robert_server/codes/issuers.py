"""Code issuers (ProStopCovid, SI-DEP ...) and their bearer tokens: the ``code_issuers`` collection.

A token is shown once, when the issuer is added; only its SHA-256 is stored. Document::

    _id         str        issuer name
    token_hash  str        hex SHA-256 of the bearer token (unique index)
    created_at  datetime
    revoked_at  datetime | None
    scopes      [str]      optional; ``admin``: may revoke any issuer's codes (others only their own)
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .pepper import token_hash

COLLECTION = "code_issuers"
ADMIN = "admin"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class IssuerError(Exception):
    """A refused issuer operation; the message is safe to print."""


async def ensure_indexes(db: AsyncDatabase) -> None:
    await db[COLLECTION].create_index([("token_hash", ASCENDING)], unique=True)


async def add(db: AsyncDatabase, name: str, now: dt.datetime, *, admin: bool = False) -> str:
    """Register an issuer; returns its new bearer token (the only time it is ever visible)."""
    if not NAME_RE.fullmatch(name):
        raise IssuerError("an issuer name is 1 to 64 characters [A-Za-z0-9_.-]")
    token = secrets.token_urlsafe(32)
    doc: dict[str, Any] = {
        "_id": name,
        "token_hash": token_hash(token),
        "created_at": now,
        "revoked_at": None,
    }
    if admin:
        doc["scopes"] = [ADMIN]
    try:
        await db[COLLECTION].insert_one(doc)
    except DuplicateKeyError:
        raise IssuerError(f"issuer {name!r} already exists") from None
    return token


async def list_all(db: AsyncDatabase) -> list[dict[str, Any]]:
    """Every issuer, without token hashes."""
    cursor = db[COLLECTION].find({}, {"token_hash": 0}).sort("_id", ASCENDING)
    return [doc async for doc in cursor]


async def revoke(db: AsyncDatabase, name: str, now: dt.datetime) -> bool:
    result = await db[COLLECTION].update_one({"_id": name, "revoked_at": None}, {"$set": {"revoked_at": now}})
    return result.modified_count == 1


async def is_admin(db: AsyncDatabase, name: str) -> bool:
    """Whether the active issuer ``name`` holds the admin scope (one read by ``_id``)."""
    doc = await db[COLLECTION].find_one({"_id": name, "revoked_at": None, "scopes": ADMIN}, {"_id": 1})
    return doc is not None


async def authenticate(db: AsyncDatabase, token: str) -> str | None:
    """The name of the active issuer holding ``token``, or None."""
    if not token or len(token) > 512:
        return None
    doc = await db[COLLECTION].find_one({"token_hash": token_hash(token), "revoked_at": None}, {"_id": 1})
    return None if doc is None else str(doc["_id"])
