"""What ``/report`` needs from the code service: reserve a code, then confirm or release it.

The flow keeps a failed upload from burning the patient's code (PROTOCOL.md 7, issue 4):

1. ``reserve(code, source)`` atomically takes an unused, valid code for a short while
   (``codes_reservation_seconds``, 2 minutes) and returns a :class:`Reservation`, or ``None`` for
   every kind of failure (unknown, expired, used, revoked, malformed, wrong kind, held by another
   upload, source locked out): they all look the same to the caller; the reason goes to the
   ``robert_codes_verifications_total`` metric only. ``source`` is the client address (rate limit).
2. the contacts are stored durably under ``reservation.report_id``;
3. ``confirm(reservation)`` marks the code used; if storing failed, ``release(reservation)`` frees it.
   Both return True if they changed the code: ``confirm`` returns False only if the reservation
   lapsed and another upload took the code (that upload stores under the same ``report_id``).

A crash between 2 and 3 leaves the reservation to expire; a retried upload then stores under the same
``report_id`` (derived from the code), which inserts nothing twice.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock
from robert_common.settings import Settings

from . import counts, metrics, store
from .formats import JWT, SHORT, jwt_validity, normalise
from .jwt_codes import JwtCodeError, JwtCodeVerifier
from .pepper import code_key, jti_key, load_pepper, report_id, source_key
from .ratelimit import RateLimiter


@dataclass(frozen=True, slots=True)
class Reservation:
    report_id: str  # opaque, stable for a given code; never the code itself
    kind: str  # "short", "long" or "jwt"
    token: str  # identifies this reservation (so a late confirm cannot take another's)
    code_key: bytes = field(default=b"", repr=False, compare=False)  # stored id of the code (an HMAC)


class CodeVerifier(Protocol):
    async def reserve(self, code: str, source: str) -> Reservation | None: ...

    async def confirm(self, reservation: Reservation) -> bool: ...

    async def release(self, reservation: Reservation) -> bool: ...

    async def locked_out(self, source: str) -> bool: ...


class StoredCodeVerifier:
    """:class:`CodeVerifier` over the ``codes`` collection, with the per-source rate limit."""

    def __init__(
        self, db: AsyncDatabase, settings: Settings, clock: Clock, pepper: bytes | None = None
    ) -> None:
        self._db = db
        self._clock = clock
        self._pepper = pepper if pepper is not None else load_pepper(settings)
        self._hold = dt.timedelta(seconds=settings.codes_reservation_seconds)
        self._jwt_days = settings.codes_jwt_lifetime_days
        self._jwt_skew = settings.codes_jwt_clock_skew
        self._jwt = JwtCodeVerifier(
            settings.codes_jwt_public_keys,
            lifetime_days=settings.codes_jwt_lifetime_days,
            skew_seconds=settings.codes_jwt_clock_skew,
        )
        self.limiter = RateLimiter(db, settings)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock.now(), tz=dt.UTC)

    async def reserve(self, code: str, source: str) -> Reservation | None:
        """Reserve ``code`` for one upload from ``source``; None for every failure (PROTOCOL.md 7)."""
        now = self._now()
        src = source_key(self._pepper, source)
        if not await self.limiter.acquire(src, now):  # atomic: check and count in one step
            metrics.LOCKED_OUT_ATTEMPTS.inc()
            metrics.VERIFICATIONS.labels("unknown", "rate_limited").inc()
            return None
        parsed = normalise(code)
        guessable = parsed is not None and parsed[0] == SHORT  # long and JWT codes cannot be guessed
        if guessable and not await self.limiter.acquire_global(now):
            await self.limiter.refund(src, now)
            metrics.VERIFICATIONS.labels(SHORT, "global_limited").inc()
            return None
        try:
            reservation, kind, reason = await self._reserve(code, now)
        except Exception:
            await self._refund(src, now, guessable)  # not the guesser's failure: ours (e.g. the database)
            raise
        # A cancelled attempt (the request's deadline) keeps its count: its check may have run.
        metrics.VERIFICATIONS.labels(kind, reason).inc()
        if reservation is None:
            await self.limiter.record_failure(src, now)
        else:
            await self._refund(src, now, guessable)
        return reservation

    async def _refund(self, src: bytes, now: dt.datetime, guessable: bool) -> None:
        await self.limiter.refund(src, now)
        if guessable:
            await self.limiter.refund_global()

    async def _reserve(self, code: str, now: dt.datetime) -> tuple[Reservation | None, str, str]:
        """``(reservation or None, kind, result)`` where result is ``reserved`` or a failure reason."""
        parsed = normalise(code)
        if parsed is None:
            return None, "unknown", "malformed"
        kind, text = parsed
        if kind == JWT:
            try:
                claims = self._jwt.verify(text, now.timestamp())
            except JwtCodeError as e:
                return None, kind, e.reason
            key = jti_key(self._pepper, claims.kid, claims.jti)
            valid = jwt_validity(claims.iat, self._jwt_days, self._jwt_skew)
            await store.insert_one(
                db=self._db, doc=store.new_code(key, JWT, valid, issuer=claims.kid, now=now)
            )
        else:
            key = code_key(self._pepper, text)
        token = secrets.token_urlsafe(16)
        if await store.reserve(self._db, key, kind, now, now + self._hold, token):
            return Reservation(report_id(self._pepper, key), kind, token, key), kind, "reserved"
        return None, kind, await self._why(key, kind, now)

    async def _why(self, key: bytes, kind: str, now: dt.datetime) -> str:
        """The reason a reservation failed, for the metrics (one extra read, on failures only)."""
        doc = await store.get(self._db, key)
        if doc is None:
            return "unknown"
        if doc["kind"] != kind:
            return "wrong_kind"
        if doc["state"] in (store.USED, store.REVOKED, store.EXPIRED):
            return str(doc["state"])
        if doc["valid_until"] <= now:
            return "expired"
        if doc["valid_from"] > now:
            return "not_yet_valid"
        return "held"  # reserved by a concurrent upload

    async def locked_out(self, source: str) -> bool:
        """Whether ``source`` is locked out now (one read, nothing counted): /report asks before it
        reads a body."""
        return await self.limiter.is_locked(source_key(self._pepper, source), self._now())

    async def confirm(self, reservation: Reservation) -> bool:
        """The contacts are stored: the code is now used (PROTOCOL.md 7: every code is single use)."""
        now = self._now()
        ok = await store.confirm(self._db, reservation.code_key, reservation.token, now)
        if ok:
            metrics.CONFIRMED.labels(reservation.kind).inc()
            await counts.add(self._db, now.date(), reservation.kind, "used")
        return ok

    async def release(self, reservation: Reservation) -> bool:
        """The upload failed: give the code back so the patient can retry."""
        ok = await store.release(self._db, reservation.code_key, reservation.token)
        if ok:
            metrics.RELEASED.labels(reservation.kind).inc()
        return ok
