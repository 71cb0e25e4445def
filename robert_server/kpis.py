"""The ``kpis`` collection: counters kept in documents (never counted by scanning), one document a day.

Document: ``{_id: "YYYY-MM-DD", <counter>: int, ...}``. Counter names are the KPI names served at
``/internal/api/v2/kpis`` (for example ``reports``, ``contactsProcessed``, ``notifiedUsers``).
Gauges that describe the current state (``usersAtRisk``) live in the ``_id: "current"`` document.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "kpis"
CURRENT = "current"


async def increment(db: AsyncDatabase, day: dt.date, **counters: int) -> None:
    """Add to today's counters (one atomic upsert)."""
    inc = {k: v for k, v in counters.items() if v}
    if inc:
        await db[COLLECTION].update_one({"_id": day.isoformat()}, {"$inc": inc}, upsert=True)


async def set_gauges(db: AsyncDatabase, **gauges: int | float) -> None:
    await db[COLLECTION].update_one({"_id": CURRENT}, {"$set": gauges}, upsert=True)


async def report(db: AsyncDatabase, since: dt.date | None = None, until: dt.date | None = None) -> dict[str, Any]:
    """Totals of every counter over [since, until] plus the current gauges."""
    totals: dict[str, Any] = {}
    current: dict[str, Any] = {}
    async for doc in db[COLLECTION].find({}):
        key = doc.pop("_id")
        if key == CURRENT:
            current = doc
            continue
        day = dt.date.fromisoformat(key)
        if (since and day < since) or (until and day > until):
            continue
        for k, v in doc.items():
            totals[k] = totals.get(k, 0) + v
    return {**totals, **current}
