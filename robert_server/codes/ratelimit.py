"""Failed code attempts per source, kept in the database so every API process shares them (issue 4).

A source that fails ``codes_rate_limit_failures`` times within ``codes_rate_limit_window`` seconds is
locked out for ``codes_rate_limit_lockout`` seconds: with 20 tries per 10 minutes, guessing one of
the live short codes among 36^6 takes a single source decades. Sources are stored as an HMAC.

Document of the ``code_attempts`` collection::

    _id           bytes(16)  HMAC of the source address
    window_start  datetime   start of the current counting window
    failures      int        failures in that window
    locked_until  datetime   end of the lock-out (1970 if never locked: filters avoid ``$or``)
"""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from robert_common.settings import Settings

from . import metrics

COLLECTION = "code_attempts"
NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class RateLimiter:
    def __init__(self, db: AsyncDatabase, settings: Settings) -> None:
        self._coll = db[COLLECTION]
        self.max_failures = settings.codes_rate_limit_failures
        self.window = dt.timedelta(seconds=settings.codes_rate_limit_window)
        self.lockout = dt.timedelta(seconds=settings.codes_rate_limit_lockout)
        metrics.RATE_LIMIT_FAILURES.set(self.max_failures)
        metrics.RATE_LIMIT_WINDOW.set(settings.codes_rate_limit_window)
        metrics.RATE_LIMIT_LOCKOUT.set(settings.codes_rate_limit_lockout)

    async def is_locked(self, source: bytes, now: dt.datetime) -> bool:
        """One read by ``_id``."""
        doc = await self._coll.find_one({"_id": source, "locked_until": {"$gt": now}}, {"_id": 1})
        return doc is not None

    async def record_failure(self, source: bytes, now: dt.datetime) -> bool:
        """Count a failure; lock the source out when it reaches the limit. True if this locked it."""
        result = await self._coll.update_one(
            {"_id": source, "window_start": {"$gt": now - self.window}}, {"$inc": {"failures": 1}}
        )
        if result.matched_count == 0:  # first failure of a new window
            try:
                await self._coll.update_one(
                    {"_id": source},
                    {"$set": {"window_start": now, "failures": 1}, "$setOnInsert": {"locked_until": NEVER}},
                    upsert=True,
                )
            except DuplicateKeyError:  # a concurrent first failure created it: count into it
                await self._coll.update_one({"_id": source}, {"$inc": {"failures": 1}})
        doc = await self._coll.find_one({"_id": source}, {"failures": 1})
        if doc is None or doc.get("failures", 0) < self.max_failures:
            return False
        locked = await self._coll.update_one(
            {"_id": source, "failures": {"$gte": self.max_failures}},
            {"$set": {"locked_until": now + self.lockout, "window_start": now, "failures": 0}},
        )
        if locked.modified_count == 1:
            metrics.LOCKOUTS.inc()
            return True
        return False

    async def purge(self, now: dt.datetime) -> int:
        """Forget sources with no recent failure and no running lock-out."""
        result = await self._coll.delete_many(
            {"window_start": {"$lte": now - self.window}, "locked_until": {"$lte": now}}
        )
        return result.deleted_count
