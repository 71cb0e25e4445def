"""Captcha challenges that gate /register (PROTOCOL.md 6), chosen by ``ROBERT_CAPTCHA``.

- ``builtin``: challenges made with the ``captcha`` library (PNG image of 6 letters and digits, or
  WAV audio of 6 digits), kept in the ``captchas`` collection with the answer stored only as a salted
  hash, a ``captcha_ttl`` expiry (default 5 minutes) and one attempt per challenge;
- ``external``: a captcha server over HTTP, as the deployed system used (``POST /captcha``,
  ``GET /captcha/{id}.png|.wav``, ``POST /captcha/{id}/checkAnswer {answer}`` -> ``{result: "SUCCESS"}``);
- ``off``: every answer accepted (tests and simulations only; a warning is logged at every start).

Captcha document::

    _id          str       random id (hex)
    kind         "IMAGE" | "AUDIO"
    media        bytes     the PNG or WAV
    salt         bytes(16)
    answer_hash  bytes     SHA-256(salt | answer)
    expires_at   datetime
    used         bool      an attempt was made (right or wrong)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import string
from typing import Protocol

import aiohttp
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from yarl import URL

from robert_common.clock import Clock
from robert_common.mongo import id_chunks
from robert_common.settings import Settings

log = logging.getLogger("robert.captcha")

COLLECTION = "captchas"
KINDS = ("IMAGE", "AUDIO")
MEDIA_TYPES = {"image": ("IMAGE", "image/png"), "audio": ("AUDIO", "audio/wav")}
IMAGE_ALPHABET = "".join(c for c in string.ascii_uppercase + string.digits if c not in "0O1I")
ANSWER_LENGTH = 6


class CaptchaNotFound(Exception):
    """Unknown, expired, or of the other media type: 404."""


class CaptchaUsed(Exception):
    """The challenge was already answered: 410."""


class CaptchaUnavailable(Exception):
    """The external captcha server cannot be reached."""


class CaptchaService(Protocol):
    async def create(self, kind: str, locale: str) -> str: ...

    async def media(self, captcha_id: str, media_type: str) -> tuple[bytes, str]: ...

    async def verify(self, captcha_id: str, answer: str) -> bool: ...

    async def close(self) -> None: ...


def _hash(salt: bytes, answer: str) -> bytes:
    return hashlib.sha256(salt + answer.strip().upper().encode()).digest()


def _render(kind: str, answer: str) -> bytes:
    """The challenge's media (CPU-bound: run it in a thread)."""
    if kind == "AUDIO":
        from captcha.audio import AudioCaptcha

        return bytes(AudioCaptcha().generate(answer))
    from captcha.image import ImageCaptcha

    return ImageCaptcha().generate(answer).getvalue()


def new_answer(kind: str) -> str:
    alphabet = string.digits if kind == "AUDIO" else IMAGE_ALPHABET  # the audio voices speak digits
    return "".join(secrets.choice(alphabet) for _ in range(ANSWER_LENGTH))


class BuiltinCaptcha:
    def __init__(self, db: AsyncDatabase, clock: Clock, ttl: int = 300) -> None:
        self.db = db
        self.clock = clock
        self.ttl = ttl

    async def ensure_indexes(self) -> None:
        """No secondary index: every /captcha and /register access is by ``_id``, and an index on
        ``expires_at`` would cost each of the two writes of a registration for the sake of the purge,
        which scans a collection that holds only the last minutes' challenges."""
        if "expires_at_1" in await self.db[COLLECTION].index_information():
            await self.db[COLLECTION].drop_index("expires_at_1")  # made by older versions

    async def create(self, kind: str, locale: str, *, answer: str | None = None) -> str:
        """A new challenge; ``answer`` fixed only by tests."""
        answer = answer or new_answer(kind)
        media = await asyncio.to_thread(_render, kind, answer)
        salt = secrets.token_bytes(16)
        captcha_id = secrets.token_hex(16)
        await self.db[COLLECTION].insert_one(
            {
                "_id": captcha_id,
                "kind": kind,
                "media": media,
                "salt": salt,
                "answer_hash": _hash(salt, answer),
                "expires_at": self.clock.utcnow() + dt.timedelta(seconds=self.ttl),
                "used": False,
            }
        )
        return captcha_id

    async def media(self, captcha_id: str, media_type: str) -> tuple[bytes, str]:
        kind, content_type = MEDIA_TYPES[media_type]
        doc = await self.db[COLLECTION].find_one({"_id": captcha_id})
        if doc is None or doc["kind"] != kind or doc["expires_at"] <= self.clock.utcnow():
            raise CaptchaNotFound
        if doc["used"]:
            raise CaptchaUsed
        return doc["media"], content_type

    async def verify(self, captcha_id: str, answer: str) -> bool:
        """One attempt: the challenge is spent (atomically) before the answer is compared."""
        doc = await self.db[COLLECTION].find_one({"_id": captcha_id}, {"salt": 1, "answer_hash": 1})
        if doc is None:
            return False
        claimed = await self.db[COLLECTION].update_one(
            {"_id": captcha_id, "used": False, "expires_at": {"$gt": self.clock.utcnow()}},
            {"$set": {"used": True}, "$unset": {"media": ""}},
        )
        if claimed.modified_count != 1:
            return False
        return hmac.compare_digest(doc["answer_hash"], _hash(doc["salt"], answer))

    async def purge_expired(self) -> int:
        return await purge_expired(self.db, self.clock.utcnow())

    async def close(self) -> None:
        return None


async def purge_expired(db: AsyncDatabase, now: dt.datetime, page: int = 1000) -> int:
    """Delete the challenges expired at ``now``; how many. Run by the matcher's daily job.

    An ``_id``-ordered walk of the collection, ``page`` challenges (only ``expires_at``) per query, the
    expired ones deleted by chunks of ids: no query filters on ``expires_at``, which has no index (see
    :meth:`BuiltinCaptcha.ensure_indexes`) and would scan the collection in one query."""
    coll = db[COLLECTION]
    after, deleted = "", 0  # every id (hex) sorts after the empty string
    while True:
        cursor = coll.find({"_id": {"$gt": after}}, {"expires_at": 1}).sort("_id", 1)
        docs = await cursor.hint([("_id", 1)]).limit(page).to_list()
        expired = [d["_id"] for d in docs if d.get("expires_at") is None or d["expires_at"] <= now]
        for chunk in id_chunks(expired):
            result = await coll.delete_many({"_id": {"$in": chunk}})
            deleted += result.deleted_count
        if len(docs) < page:
            return deleted
        after = docs[-1]["_id"]


# Ids of the deployed captcha server, as of the builtin one: 32 hexadecimal digits (128 random bits).
# Anything else (``../``, ``?``, ``#``, ``%2F``...) never reaches the upstream URL (issue 10 item 6).
_CAPTCHA_ID = re.compile(r"[0-9a-fA-F]{32}")


def valid_captcha_id(captcha_id: object) -> bool:
    return isinstance(captcha_id, str) and _CAPTCHA_ID.fullmatch(captcha_id) is not None


class ExternalCaptcha:
    """The deployed system's captcha server, over HTTP.

    Upstream URLs are the configured base and a fixed path whose only variable segment is an id checked
    by :func:`valid_captcha_id` (and quoted by yarl all the same): a phone cannot make this API call any
    other path of the captcha host and hand its answer back as a captcha result.
    """

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = URL(base_url.rstrip("/"))
        if not self.base_url.is_absolute() or self.base_url.query_string or self.base_url.fragment:
            raise ValueError("the external captcha URL must be absolute, with no query or fragment")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _url(self, *segments: str) -> URL:
        return self.base_url.joinpath(*segments)  # each segment quoted, "/" never taken from an id

    async def create(self, kind: str, locale: str) -> str:
        try:
            async with self._http().post(self._url("captcha"), json={"type": kind, "locale": locale}) as r:
                if r.status >= 400:
                    raise CaptchaUnavailable
                body = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise CaptchaUnavailable from None
        captcha_id = body.get("id") or body.get("captchaId") if isinstance(body, dict) else None
        if not valid_captcha_id(captcha_id):
            log.warning("captcha server answered an id of an unexpected format")
            raise CaptchaUnavailable
        assert isinstance(captcha_id, str)
        return captcha_id

    async def media(self, captcha_id: str, media_type: str) -> tuple[bytes, str]:
        _, content_type = MEDIA_TYPES[media_type]
        if not valid_captcha_id(captcha_id):
            raise CaptchaNotFound
        ext = "wav" if media_type == "audio" else "png"
        try:
            async with self._http().get(
                self._url("captcha", f"{captcha_id}.{ext}"), allow_redirects=False
            ) as r:
                if r.status == 410:
                    raise CaptchaUsed
                if r.status != 200:
                    raise CaptchaNotFound
                return await r.read(), content_type
        except (aiohttp.ClientError, TimeoutError):
            raise CaptchaNotFound from None

    async def verify(self, captcha_id: str, answer: str) -> bool:
        if not valid_captcha_id(captcha_id):
            return False
        url = self._url("captcha", captcha_id, "checkAnswer")
        try:
            async with self._http().post(url, json={"answer": answer}, allow_redirects=False) as r:
                if r.status != 200:
                    return False
                body = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            log.warning("captcha server unreachable")
            return False
        return isinstance(body, dict) and body.get("result") == "SUCCESS"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class NoCaptcha:
    """``ROBERT_CAPTCHA=off``: every answer is accepted. Never in production."""

    async def create(self, kind: str, locale: str) -> str:
        return secrets.token_hex(16)

    async def media(self, captcha_id: str, media_type: str) -> tuple[bytes, str]:
        raise CaptchaNotFound

    async def verify(self, captcha_id: str, answer: str) -> bool:
        return True

    async def close(self) -> None:
        return None


async def make_captcha(settings: Settings, db: AsyncDatabase, clock: Clock) -> CaptchaService:
    """The captcha service the settings ask for."""
    if settings.captcha == "off":
        log.warning("captcha is OFF: anyone can register without a challenge (tests and simulations only)")
        return NoCaptcha()
    if settings.captcha == "external":
        if not settings.captcha_external_url:
            raise ValueError("ROBERT_CAPTCHA=external needs ROBERT_CAPTCHA_EXTERNAL_URL")
        return ExternalCaptcha(settings.captcha_external_url)
    builtin = BuiltinCaptcha(db, clock, settings.captcha_ttl)
    try:
        await builtin.ensure_indexes()
    except PyMongoError:
        log.warning("database unreachable at start: captcha indexes not checked")
    return builtin
