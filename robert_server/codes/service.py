"""Issuing, revoking, counting and purging codes: what the CodeIssuer gRPC service and the CLI call.

Codes come from the CSPRNG (:mod:`.formats`); each is stored as an HMAC only (:mod:`.store`), so
the code in clear exists only in the answer to the issuer.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import zoneinfo
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock
from robert_common.settings import Settings

from . import counts, issuers, metrics, store
from .formats import (
    JWT,
    LONG,
    SHORT,
    generate_long,
    generate_short,
    jwt_validity,
    long_validity,
    normalise,
    qr_payload,
    short_validity,
)
from .jwt_codes import JwtCodeError, JwtCodeVerifier
from .pepper import code_key, jti_key, load_pepper
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

MAX_LOT = 100_000  # codes in one long-code lot
LOT_BATCH = 1_000  # codes generated and stored per database round trip
MAX_DRAWS = 10  # draws of a short code that collides with a live one before giving up


class CodeServiceError(Exception):
    """A request the service refuses (bad count, bad date ...): the message is safe to show."""


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    kind: str
    valid_from: dt.datetime
    valid_until: dt.datetime
    qr_payload: str
    lot: str | None = None


class CodeService:
    def __init__(
        self, db: AsyncDatabase, settings: Settings, clock: Clock, pepper: bytes | None = None
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.pepper = pepper if pepper is not None else load_pepper(settings)
        self.zone = zoneinfo.ZoneInfo(settings.codes_timezone)
        self._jwt = JwtCodeVerifier(
            settings.codes_jwt_public_keys,
            lifetime_days=settings.codes_jwt_lifetime_days,
            skew_seconds=settings.codes_jwt_clock_skew,
        )

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now(), tz=dt.UTC)

    def today(self) -> dt.date:
        """Today in the zone of long-code validity (Europe/Paris)."""
        return self.now().astimezone(self.zone).date()

    async def ensure_indexes(self) -> None:
        await store.ensure_indexes(self.db)
        await issuers.ensure_indexes(self.db)

    def _issued(
        self, code: str, kind: str, valid: tuple[dt.datetime, dt.datetime], lot: str | None
    ) -> IssuedCode:
        payload = qr_payload(self.settings.codes_app_link_base, code, kind)
        return IssuedCode(code, kind, valid[0], valid[1], payload, lot)

    async def issue_short(self, issuer: str) -> IssuedCode:
        """One short code valid 60 minutes from now (ProStopCovid, PROTOCOL.md 7)."""
        now = self.now()
        valid = short_validity(now, self.settings.codes_short_validity_minutes)
        for _ in range(MAX_DRAWS):
            code = generate_short()
            doc = store.new_code(code_key(self.pepper, code), SHORT, valid, issuer=issuer, now=now)
            if await store.insert_one(self.db, doc):
                metrics.ISSUED.labels(SHORT).inc()
                await counts.add(self.db, now.date(), SHORT, "issued")
                return self._issued(code, SHORT, valid, None)
        raise CodeServiceError("could not draw a free short code")  # 36^6 codes: only if the space is full

    def check_lot_day(self, day: dt.date) -> None:
        today = self.today()
        if day < today - dt.timedelta(
            days=self.settings.codes_long_validity_days
        ) or day > today + dt.timedelta(days=366):
            raise CodeServiceError("valid_from_date must be within a year from today and not already expired")

    async def issue_long_lot(
        self, issuer: str, count: int, day: dt.date, lot: str | None = None
    ) -> AsyncIterator[list[IssuedCode]]:
        """A lot of ``count`` long codes valid from 00:00 on ``day`` to the end of day+7 (Europe/Paris).

        Yields the codes batch by batch, each batch stored before it is yielded.
        """
        if not 1 <= count <= MAX_LOT:
            raise CodeServiceError(f"count must be between 1 and {MAX_LOT}")
        self.check_lot_day(day)
        lot = lot or f"{day.isoformat()}-{uuid.uuid4().hex[:12]}"
        valid = long_validity(day, self.settings.codes_long_validity_days, self.settings.codes_timezone)
        remaining = count
        while remaining:
            batch = await self._store_long_batch(issuer, min(remaining, LOT_BATCH), valid, lot)
            remaining -= len(batch)
            metrics.ISSUED.labels(LONG).inc(len(batch))
            await counts.add(self.db, self.now().date(), LONG, "issued", len(batch))
            yield batch

    async def _store_long_batch(
        self, issuer: str, n: int, valid: tuple[dt.datetime, dt.datetime], lot: str
    ) -> list[IssuedCode]:
        now = self.now()
        codes = {code_key(self.pepper, c): c for c in (generate_long() for _ in range(n))}
        docs = [store.new_code(k, LONG, valid, issuer=issuer, now=now, lot=lot) for k in codes]
        duplicates = await store.insert_many(self.db, docs)  # UUIDv4 collisions: never in practice
        return [self._issued(c, LONG, valid, lot) for k, c in codes.items() if k not in duplicates]

    async def _key_of(self, code: str) -> bytes | None:
        parsed = normalise(code)
        if parsed is None:
            return None
        kind, text = parsed
        if kind != JWT:
            return code_key(self.pepper, text)
        try:
            claims = self._jwt.verify(text, self.clock.now())
        except JwtCodeError:
            return None
        key = jti_key(self.pepper, claims.kid, claims.jti)
        valid = jwt_validity(
            claims.iat, self.settings.codes_jwt_lifetime_days, self.settings.codes_jwt_clock_skew
        )
        await store.insert_one(self.db, store.new_code(key, JWT, valid, issuer=claims.kid, now=self.now()))
        return key

    async def revoke(self, code: str, issuer: str | None = None) -> bool:
        """Revoke an unused code; False if unknown, already used, revoked or expired, or (with
        ``issuer``) issued by another issuer: the refusals look the same, so no issuer learns of another's
        codes."""
        key = await self._key_of(code)
        ok = key is not None and await store.revoke(self.db, key, issuer)
        if ok:
            metrics.REVOKED.inc()
        return ok

    async def purge(self) -> dict[str, int]:
        """Mark expired codes (counted per day and kind), delete expired unused codes after 2 days and
        used or revoked codes and jtis after their validity plus a margin; forget stale rate-limit entries."""
        now = self.now()
        expired = await store.mark_expired(self.db, now)
        for (day, kind), n in expired.items():
            await counts.add(self.db, day, kind, "expired", n)
        s = self.settings
        deleted_expired = await store.delete_old(
            self.db, [store.EXPIRED], now - dt.timedelta(days=s.codes_purge_expired_after_days)
        )
        deleted_used = await store.delete_old(
            self.db, [store.USED, store.REVOKED], now - dt.timedelta(days=s.codes_purge_used_margin_days)
        )
        sources = await RateLimiter(self.db, s).purge(now)
        metrics.PURGED.labels("expired").inc(deleted_expired)
        metrics.PURGED.labels("used").inc(deleted_used)
        result = {
            "marked_expired": sum(expired.values()), "deleted_expired": deleted_expired,
            "deleted_used": deleted_used, "forgotten_sources": sources,
        }  # fmt: skip
        log.info("codes purged", extra=result)
        return result
