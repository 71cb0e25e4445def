"""Daily counts of codes issued, used and expired per kind, kept in the ``kpis`` collection.

Counter names: ``codes<Kind><Event>`` (``codesShortIssued``, ``codesLongUsed``, ``codesJwtExpired``
...), added to the day's KPI document (UTC day) so ``/internal/api/v2/kpis`` serves them too.
"""

from __future__ import annotations

import datetime as dt

from pymongo.asynchronous.database import AsyncDatabase

from robert_server import kpis

from .formats import KINDS

EVENTS = ("issued", "used", "expired")
MAX_DAYS = 400


def counter_name(kind: str, event: str) -> str:
    return f"codes{kind.capitalize()}{event.capitalize()}"


async def add(db: AsyncDatabase, day: dt.date, kind: str, event: str, n: int = 1) -> None:
    await kpis.increment(db, day, **{counter_name(kind, event): n})


async def daily(
    db: AsyncDatabase, since: dt.date, until: dt.date
) -> list[tuple[dt.date, str, dict[str, int]]]:
    """``(day, kind, {issued, used, expired})`` for each day of [since, until] and kind with any count."""
    if until < since or (until - since).days >= MAX_DAYS:
        raise ValueError(f"a range of 1 to {MAX_DAYS} days")
    days = [(since + dt.timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]
    out = []
    async for doc in db[kpis.COLLECTION].find({"_id": {"$in": days}}):
        day = dt.date.fromisoformat(doc["_id"])
        for kind in KINDS:
            values = {event: int(doc.get(counter_name(kind, event), 0)) for event in EVENTS}
            if any(values.values()):
                out.append((day, kind, values))
    return sorted(out, key=lambda row: (row[0], KINDS.index(row[1])))
