"""Fallback login credentials (passkeys) of professionals: the ``portal_credentials`` collection.

A passkey is enrolled only in a session opened through the identity provider, so it is bound to a
professional the provider vouched for; it is then a login that does not need the provider. Document::

    _id          bytes     WebAuthn credential id
    pro          str       keyed hash of the professional's identifier (also the WebAuthn user handle)
    profession   str       the profession the provider gave at enrollment
    name         str       display name at enrollment
    public_key   bytes     COSE public key
    sign_count   int
    created_at   datetime
    used_at      datetime | None
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "portal_credentials"


async def add(
    db: AsyncDatabase, credential_id: bytes, pro: str, profession: str, name: str, public_key: bytes,
    sign_count: int, now: dt.datetime,
) -> None:  # fmt: skip
    await db[COLLECTION].insert_one(
        {"_id": credential_id, "pro": pro, "profession": profession, "name": name,
         "public_key": public_key, "sign_count": sign_count, "created_at": now, "used_at": None}
    )  # fmt: skip


async def get(db: AsyncDatabase, credential_id: bytes) -> dict[str, Any] | None:
    return await db[COLLECTION].find_one({"_id": credential_id})


async def used(
    db: AsyncDatabase, credential_id: bytes, old_count: int, new_count: int, now: dt.datetime
) -> bool:
    """Record a use; False when another login with the same signature count won the race (a replay)."""
    result = await db[COLLECTION].update_one(
        {"_id": credential_id, "sign_count": old_count}, {"$set": {"sign_count": new_count, "used_at": now}}
    )
    return result.modified_count == 1
