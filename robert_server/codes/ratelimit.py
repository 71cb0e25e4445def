"""Failed code attempts per source, kept in the database so every API process shares them (issue 4).

A source that fails ``codes_rate_limit_failures`` times within ``codes_rate_limit_window`` seconds is
locked out for ``codes_rate_limit_lockout`` seconds: with 20 tries per 10 minutes, guessing one of
the live short codes among 36^6 takes a single source decades. Sources are stored as an HMAC.
An attempt is counted *before* its code is checked, in one conditional update (:meth:`RateLimiter.acquire`),
and given back if the code was good: so parallel guesses cannot overrun the limit.

Document of the ``code_attempts`` collection::

    _id           bytes(16)  HMAC of the source address
    window_start  datetime   start of the current counting window
    failures      int        failed (or in-flight) attempts in that window
    locked_until  datetime   end of the lock-out (1970 if never locked: filters avoid ``$or``)

and one document ``_id: "global"`` (same fields, never locked) holds the budget of failed short-code
checks of all sources together (``codes_global_failures`` per ``codes_global_window``).
"""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from robert_common.settings import Settings

from . import metrics

COLLECTION = "code_attempts"
NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
GLOBAL = "global"  # the budget shared by every source (a str _id: sources are bytes)


class RateLimiter:
    def __init__(self, db: AsyncDatabase, settings: Settings) -> None:
        self._coll = db[COLLECTION]
        self.max_failures = settings.codes_rate_limit_failures
        self.window = dt.timedelta(seconds=settings.codes_rate_limit_window)
        self.lockout = dt.timedelta(seconds=settings.codes_rate_limit_lockout)
        self.global_failures = settings.codes_global_failures
        self.global_window = dt.timedelta(seconds=settings.codes_global_window)
        metrics.RATE_LIMIT_FAILURES.set(self.max_failures)
        metrics.RATE_LIMIT_WINDOW.set(settings.codes_rate_limit_window)
        metrics.RATE_LIMIT_LOCKOUT.set(settings.codes_rate_limit_lockout)

    async def is_locked(self, source: bytes, now: dt.datetime) -> bool:
        """One read by ``_id``: a cheap early refusal (the atomic decision is :meth:`acquire`)."""
        doc = await self._coll.find_one({"_id": source, "locked_until": {"$gt": now}}, {"_id": 1})
        return doc is not None

    async def acquire(self, source: bytes, now: dt.datetime) -> bool:
        """Take one attempt of ``source`` before its code is checked: False if it has none left.

        Check and count are one conditional ``update_one`` (the bound is in the filter, the
        ``modified_count`` decides), so concurrent guesses from many API processes can never check
        more than ``max_failures`` codes per window (issue 10 item 4: 131 of 500 did). An attempt is
        counted as a failure until :meth:`refund` gives it back for a good code.
        """
        for _ in range(3):  # each step that loses a race lets the next one see the new state
            taken = await self._coll.update_one(
                {
                    "_id": source,
                    "failures": {"$lt": self.max_failures},
                    "window_start": {"$gt": now - self.window},
                    "locked_until": {"$lte": now},
                },
                {"$inc": {"failures": 1}},
            )
            if taken.modified_count == 1:
                return True
            renewed = await self._coll.update_one(  # the window (or a lock-out) is over: start anew
                {"_id": source, "window_start": {"$lte": now - self.window}, "locked_until": {"$lte": now}},
                {"$set": {"window_start": now, "failures": 1}},
            )
            if renewed.modified_count == 1:
                return True
            if renewed.matched_count == 0 and taken.matched_count == 0:
                try:  # first attempt of this source
                    await self._coll.insert_one(
                        {"_id": source, "window_start": now, "failures": 1, "locked_until": NEVER}
                    )
                    return True
                except DuplicateKeyError:
                    continue
            if await self.is_locked(source, now):
                return False
            if not await self._at_limit(source, now):
                continue
            return False
        return False

    async def _at_limit(self, source: bytes, now: dt.datetime) -> bool:
        doc = await self._coll.find_one(
            {
                "_id": source,
                "failures": {"$gte": self.max_failures},
                "window_start": {"$gt": now - self.window},
            },
            {"_id": 1},
        )
        return doc is not None

    async def refund(self, source: bytes, now: dt.datetime) -> None:
        """The code was good: the attempt :meth:`acquire` took is not a failure."""
        await self._coll.update_one(
            {"_id": source, "failures": {"$gt": 0}, "locked_until": {"$lte": now}}, {"$inc": {"failures": -1}}
        )

    async def record_failure(self, source: bytes, now: dt.datetime) -> bool:
        """The acquired attempt failed: lock the source out if that was its last. True if this locked it.

        The lock sets ``window_start`` to 1970 so that the first attempt after the lock-out starts a
        fresh window (``acquire``'s second step).
        """
        locked = await self._coll.update_one(
            {"_id": source, "failures": {"$gte": self.max_failures}, "locked_until": {"$lte": now}},
            {"$set": {"locked_until": now + self.lockout, "window_start": NEVER}},
        )
        if locked.modified_count == 1:
            metrics.LOCKOUTS.inc()
            return True
        return False

    async def acquire_global(self, now: dt.datetime) -> bool:
        """Take one of the global budget of short-code checks of this window (all sources together).

        Guessing spread over many sources (a botnet, IPv6 ranges) is bounded by this budget, as one
        source is by :meth:`acquire`: one conditional update of the ``global`` document, the bound in
        the filter. A good code gives its check back (:meth:`refund_global`). See README, "Guessing".
        """
        for _ in range(3):
            taken = await self._coll.update_one(
                {
                    "_id": GLOBAL,
                    "failures": {"$lt": self.global_failures},
                    "window_start": {"$gt": now - self.global_window},
                },
                {"$inc": {"failures": 1}},
            )
            if taken.modified_count == 1:
                return True
            renewed = await self._coll.update_one(
                {"_id": GLOBAL, "window_start": {"$lte": now - self.global_window}},
                {"$set": {"window_start": now, "failures": 1}},
            )
            if renewed.modified_count == 1:
                return True
            if taken.matched_count or renewed.matched_count:
                continue
            try:
                await self._coll.insert_one(
                    {"_id": GLOBAL, "window_start": now, "failures": 1, "locked_until": NEVER}
                )
                return True
            except DuplicateKeyError:
                continue
        metrics.GLOBAL_LIMITED.inc()
        return False

    async def refund_global(self) -> None:
        await self._coll.update_one({"_id": GLOBAL, "failures": {"$gt": 0}}, {"$inc": {"failures": -1}})

    async def purge(self, now: dt.datetime) -> int:
        """Forget sources with no recent failure and no running lock-out."""
        result = await self._coll.delete_many(
            {
                "window_start": {"$lte": now - self.window},
                "locked_until": {"$lte": now},
                "_id": {"$ne": GLOBAL},
            }
        )
        return result.deleted_count
