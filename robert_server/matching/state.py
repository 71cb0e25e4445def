"""The ``matching_state`` collection: the claim of the daily matching job. The one place that touches it.

Workers on many machines share the daily job (:mod:`.daily`) through one document, claimed with a
conditional update (a lease) so that one worker runs it a day, and a worker that dies while running it
leaves it to be taken up again when its lease ends.

One document per daily job: ``"daily"`` (the walk, counts and purges) and ``"identities"`` (the
identity reconciliation, which needs the crypto service: claimed on its own, so that a crypto service
that is down, e.g. not yet up when ``robert up`` starts the matcher, only delays it to a later pass).

Document::

    _id           "daily" | "identities"
    done_day      str | None   ISO date of the last day whose job finished (service clock)
    lease_until   datetime     a finished or never-claimed job has a lease in the past
    owner         str          the worker that claimed it last
    progress_day  str          (while a job runs) the day whose registrations walk has reached ``after``
    after         bytes        the last id_A whose page is done: a job taken up again goes on from there
"""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

COLLECTION = "matching_state"
DAILY = "daily"
IDENTITIES = "identities"
UNCLAIMED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


async def claim_daily(
    db: AsyncDatabase,
    today: dt.date,
    now: dt.datetime,
    lease_seconds: float,
    owner: str,
    job: str = DAILY,
) -> bool:
    """Claim today's ``job`` unless it is done today or another worker's lease on it still runs."""
    try:  # the document must exist for the conditional update below to have something to match
        await collection(db).insert_one({"_id": job, "done_day": None, "lease_until": UNCLAIMED})
    except DuplicateKeyError:
        pass
    result = await collection(db).update_one(
        {"_id": job, "done_day": {"$ne": today.isoformat()}, "lease_until": {"$lt": now}},
        {"$set": {"lease_until": now + dt.timedelta(seconds=lease_seconds), "owner": owner}},
    )
    return result.modified_count == 1


async def daily_progress(db: AsyncDatabase, today: dt.date) -> bytes | None:
    """Where today's walk of the registrations stopped (the last id_A done), or None: not started today."""
    doc = await collection(db).find_one({"_id": DAILY}, {"progress_day": 1, "after": 1})
    if doc is None or doc.get("progress_day") != today.isoformat():
        return None
    return bytes(doc["after"])


async def save_daily_progress(
    db: AsyncDatabase, today: dt.date, owner: str, after: bytes, lease_until: dt.datetime
) -> bool:
    """Record that today's walk is done up to ``after`` and extend the lease, only while ``owner`` still
    holds the job (False: another worker took it over, this one stops)."""
    result = await collection(db).update_one(
        {"_id": DAILY, "owner": owner, "done_day": {"$ne": today.isoformat()}},
        {"$set": {"progress_day": today.isoformat(), "after": after, "lease_until": lease_until}},
    )
    return result.matched_count == 1


async def release_daily(db: AsyncDatabase, job: str, owner: str) -> None:
    """``owner`` gives its claim on ``job`` up undone: any worker may claim it again at once."""
    await collection(db).update_one({"_id": job, "owner": owner}, {"$set": {"lease_until": UNCLAIMED}})


async def finish_daily(db: AsyncDatabase, today: dt.date, job: str = DAILY) -> None:
    """Today's job is done: no other worker claims it again today; the lease is released."""
    await collection(db).update_one(
        {"_id": job},
        {
            "$set": {"done_day": today.isoformat(), "lease_until": UNCLAIMED},
            "$unset": {"progress_day": "", "after": ""},
        },
    )
