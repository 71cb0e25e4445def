"""Server-side sessions of the portal: the ``portal_sessions`` collection.

The browser holds only a random token (cookie); the database holds its SHA-256. A session starts
anonymous (it carries the OIDC state, nonce and PKCE verifier, or a WebAuthn challenge), and a login
replaces it by a new one (no session fixation). It ends after ``idle`` without a request or ``absolute``
after it started, whichever comes first, by the injectable clock. Document::

    _id          str       hex SHA-256 of the cookie token
    created_at   float     Unix seconds (portal clock)
    seen_at      float
    expires_at   datetime  when the absolute timeout falls (for the purge)
    csrf         str       token every form and script call must echo
    pro          str|None  keyed hash of the professional's identifier (logged in), never the identifier
    name         str       display name from the provider
    profession   str       the allowed profession code that let them in
    fallback     bool      logged in with a passkey instead of the provider
    id_token     str|None  the provider's id_token (logout hint)
    oidc         dict|None state, nonce, verifier of a login under way
    challenge    str|None  WebAuthn challenge under way (base64url)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock

COLLECTION = "portal_sessions"


@dataclass
class Session:
    token: str
    doc: dict[str, Any]

    @property
    def csrf(self) -> str:
        return str(self.doc["csrf"])

    @property
    def logged_in(self) -> bool:
        return self.doc.get("pro") is not None


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, db: AsyncDatabase, clock: Clock, idle_seconds: float, absolute_seconds: float) -> None:
        self.col = db[COLLECTION]
        self.clock = clock
        self.idle = idle_seconds
        self.absolute = absolute_seconds

    async def create(self, **fields: Any) -> Session:
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        doc = {
            "_id": _key(token), "created_at": now, "seen_at": now,
            "expires_at": dt.datetime.fromtimestamp(now + self.absolute, dt.UTC),
            "csrf": secrets.token_urlsafe(32), "pro": None, "name": "", "profession": "",
            "fallback": False, "id_token": None, "oidc": None, "challenge": None, **fields,
        }  # fmt: skip
        await self.col.insert_one(doc)
        return Session(token, doc)

    async def get(self, token: str | None) -> tuple[Session | None, bool]:
        """(the live session of ``token``, whether a session existed but timed out)."""
        if not token or len(token) > 100:
            return None, False
        doc = await self.col.find_one({"_id": _key(token)})
        if doc is None:
            return None, False
        now = self.clock.now()
        if now - doc["seen_at"] > self.idle or now - doc["created_at"] > self.absolute:
            await self.col.delete_one({"_id": doc["_id"]})
            return None, True
        await self.col.update_one({"_id": doc["_id"]}, {"$set": {"seen_at": now}})
        doc["seen_at"] = now
        return Session(token, doc), False

    async def update(self, session: Session, **fields: Any) -> None:
        await self.col.update_one({"_id": _key(session.token)}, {"$set": fields})
        session.doc.update(fields)

    async def take(self, session: Session, field: str) -> Any:
        """Read and clear a one-time value (OIDC state, WebAuthn challenge): a replay finds None."""
        result = await self.col.update_one(
            {"_id": _key(session.token), field: {"$ne": None}}, {"$set": {field: None}}
        )
        value = session.doc.get(field)
        session.doc[field] = None
        return value if result.modified_count == 1 else None

    async def delete(self, session: Session) -> None:
        await self.col.delete_one({"_id": _key(session.token)})

    async def purge(self) -> int:
        """Delete sessions past their absolute timeout (idle ones are deleted when next seen)."""
        now = dt.datetime.fromtimestamp(self.clock.now(), dt.UTC)
        return (await self.col.delete_many({"expires_at": {"$lt": now}})).deleted_count
