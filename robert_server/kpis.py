"""The ``kpis`` collection: counters kept in documents (never counted by scanning), one document a day.

Document: ``{_id: "YYYY-MM-DD", <counter>: int, ...}``. Counter names are the KPI names served at
``/internal/api/v2/kpis`` (:data:`COUNTERS`). Gauges that describe the current state (``usersAtRisk``)
live in the ``_id: "current"`` document (:data:`GAUGES`).

Who counts what: the phone API counts ``reports`` and ``notifiedUsers`` (a phone told of its current risk);
the federation service and forwarder count ``federation*``; the matching worker counts everything else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

COLLECTION = "kpis"
CURRENT = "current"

# Per-day counters, summed over the days asked for.
COUNTERS: dict[str, str] = {
    "reports": "reports whose contacts were stored (once each, whatever the retries and crashes)",
    "contactsProcessed": "uploaded contacts the matching worker finished with (any outcome)",
    "hellosProcessed": "HELLOs of those contacts",
    "hellosScored": "HELLOs that passed every check and were scored",
    "contactsForeign": "contacts of another country, kept for forwarding (PROTOCOL.md 8 step 1)",
    "hellosRejectedForeignCountry": "HELLOs of contacts of another country (forwarded, not scored here)",
    "hellosRejectedUndecryptable": "HELLOs of contacts whose EBID did not decrypt (no key, epochs disagree)",
    "hellosRejectedUnknownIdentity": "HELLOs of contacts of an unknown or unregistered id_A",
    "hellosRejectedMalformed": "HELLOs of malformed contacts",
    "hellosRejectedBadMac": "HELLOs with an invalid MAC (PROTOCOL.md 8 step 3)",
    "hellosRejectedTimeMismatch": "HELLOs whose own time is too far from the collection time (step 4)",
    "hellosRejectedBadEpoch": "HELLOs collected more than one epoch away from their EBID's epoch (step 2)",
    "alertedUsers": "risk evaluations that found a new risk (a phone put at risk)",
    "notifiedUsers": "phones told of their current risk at a /status",
    "usersAboveRiskThresholdButRetentionPeriodExpired": "above the threshold, contact too old",
    "riskFlagsCleared": "at-risk flags cleared 7 days after the last contact",
    "exposuresPurged": "exposure epochs dropped as older than the contagious period",
    # Federation (robert_server.federation): each also counted per partner, as <name>_0x<CC>.
    "federationContactsForwarded": "contacts of another country delivered to that country's server",
    "federationContactsRefusedByPartner": "contacts a partner's server refused (not delivered)",
    "federationContactsDropped": "contacts of another country dropped undelivered after the retention",
    "federationContactsReceived": "contacts partners forwarded to us, stored for matching (no local report)",
    "federationContactsRefused": "contacts partners forwarded that we refused (bad batch, not for our CC)",
}
# Gauges of the current state, in the "current" document.
GAUGES: dict[str, str] = {"usersAtRisk": "registrations at risk now"}


async def increment(db: AsyncDatabase, day: dt.date, **counters: int) -> None:
    """Add to the counters of ``day`` (one atomic upsert)."""
    inc = {k: v for k, v in counters.items() if v}
    if inc:
        await _upsert_inc(db, day.isoformat(), inc)


async def _upsert_inc(db: AsyncDatabase, doc_id: str, inc: dict[str, int]) -> None:
    """``$inc`` with upsert; two first increments of a day may race to insert: the loser updates."""
    try:
        await db[COLLECTION].update_one({"_id": doc_id}, {"$inc": inc}, upsert=True)
    except DuplicateKeyError:
        await db[COLLECTION].update_one({"_id": doc_id}, {"$inc": inc})


RUNS_KEPT = 1000  # ids of recent counting runs kept per document, so a retried count adds nothing


async def increment_once(
    db: AsyncDatabase, day: dt.date, run_id: str, counters: dict[str, int], gauge_deltas: dict[str, int]
) -> bool:
    """Add ``counters`` to ``day`` and move the gauges, at most once per ``run_id``.

    Each document remembers the runs it counted (``_runs``): a count retried after a crash (the same
    run_id) matches no document, and its upsert hits the existing _id, which is the "already counted"
    answer. True when the day's counters were added now.
    """
    counted = await _increment_once(db, day.isoformat(), run_id, counters)
    await _increment_once(db, CURRENT, run_id, gauge_deltas)
    return counted


async def increment_once_keys(
    db: AsyncDatabase,
    day: dt.date,
    keys: list[str],
    counters: dict[str, int],
    gauge_deltas: dict[str, int],
    seen: Sequence[str] = (),
) -> tuple[bool, bool]:
    """Add ``counters`` to ``day`` and move the gauges, unless any of ``keys`` (or ``seen``) was counted.

    All or nothing per document: one conditional update remembers every key. ``(day, gauges)``: whether
    each of the two documents now holds these counts (True also when there was nothing to add).
    """
    known = list(keys) + [k for k in seen if k not in keys]
    day_ok = await _increment_once(db, day.isoformat(), keys, counters, known, empty=True)
    gauges_ok = await _increment_once(db, CURRENT, keys, gauge_deltas, known, empty=True)
    return day_ok, gauges_ok


async def _increment_once(
    db: AsyncDatabase,
    doc_id: str,
    run_id: str | list[str],
    deltas: dict[str, int],
    known: list[str] | None = None,
    empty: bool = False,
) -> bool:
    inc = {k: v for k, v in deltas.items() if v}
    if not inc:
        return empty
    keys = [run_id] if isinstance(run_id, str) else run_id
    query = {"_id": doc_id, "_runs": {"$nin": known or keys}}
    update = {"$inc": inc, "$push": {"_runs": {"$each": keys, "$slice": -RUNS_KEPT}}}
    try:
        await db[COLLECTION].update_one(query, update, upsert=True)
        return True
    except DuplicateKeyError:
        # The document exists: either this run was counted already, or another run created it
        # at the same moment. Without upsert, the update applies only in the second case.
        result = await db[COLLECTION].update_one(query, update)
        return result.modified_count == 1


async def set_gauges(db: AsyncDatabase, **gauges: int | float) -> None:
    """Set gauges to exact values (e.g. after a recount)."""
    await db[COLLECTION].update_one({"_id": CURRENT}, {"$set": gauges}, upsert=True)


async def counted_runs(db: AsyncDatabase) -> list[str] | None:
    """The runs whose gauge deltas are in the gauges now (``_runs`` of the "current" document; None when
    no run was ever counted), for :func:`set_gauges_if_runs`."""
    doc = await db[COLLECTION].find_one({"_id": CURRENT}, {"_runs": 1})
    return None if doc is None or "_runs" not in doc else list(doc["_runs"])


async def set_gauges_if_runs(db: AsyncDatabase, runs: list[str] | None, **gauges: int | float) -> bool:
    """Set gauges to exact values, only if no run was counted into them since ``runs`` was read.

    A recount made from a state that a concurrent :func:`increment_once` has since moved would overwrite
    that increment; then nothing is set (False) and the caller counts again."""
    query: dict[str, Any] = {"_id": CURRENT, "_runs": runs if runs is not None else {"$exists": False}}
    try:
        result = await db[COLLECTION].update_one(query, {"$set": gauges}, upsert=runs is None)
    except DuplicateKeyError:
        return False  # the document was created meanwhile, by a counted run
    return result.matched_count == 1 or result.upserted_id is not None


async def adjust_gauges(db: AsyncDatabase, **deltas: int) -> None:
    """Move gauges by ``deltas`` (one atomic upsert)."""
    inc = {k: v for k, v in deltas.items() if v}
    if inc:
        await _upsert_inc(db, CURRENT, inc)


async def report(
    db: AsyncDatabase, since: dt.date | None = None, until: dt.date | None = None
) -> dict[str, Any]:
    """Totals of every counter over [since, until] plus the current gauges (every known KPI, 0 if unset)."""
    totals: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    current: dict[str, Any] = dict.fromkeys(GAUGES, 0)
    async for doc in db[COLLECTION].find({}):
        key = doc.pop("_id")
        doc = {k: v for k, v in doc.items() if not k.startswith("_")}  # bookkeeping, not KPIs
        if key == CURRENT:
            current.update(doc)
            continue
        day = dt.date.fromisoformat(key)
        if (since and day < since) or (until and day > until):
            continue
        for k, v in doc.items():
            totals[k] = totals.get(k, 0) + v
    return {**totals, **current}
