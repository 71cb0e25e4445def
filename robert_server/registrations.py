"""The ``registrations`` collection: the one place that reads and writes it.

One document per registered phone, keyed by id_A. No key material is ever stored here (the crypto
service holds the sealed K_A,mac and K_A,tuples in its own database).

Document::

    _id                    bytes(5)  id_A
    created_epoch          int       epoch of /register
    push_info              {token, locale, timezone} | absent
    last_status_epoch      int | None   epoch of the last accepted /status
    last_refused_status_epoch int | absent
    last_status_batch      bytes | absent  which accept wrote last_status_epoch (its StatusPoll.write_id)
    last_drift             int       phone time minus server time (s) at the last authenticated request
    last_unregister_time, last_delete_history_time   int | absent   request time (NTP s) of the last
                                     accepted /unregister, /deleteExposureHistory (replays refused)
    exposures              {"<epochId>": float}   summed contact scores per exposure epoch
    applied_batches        [str]     ids of contact batches already added (idempotent matching)
    risk_pending           bool      exposures changed since the last risk evaluation
    at_risk                bool
    latest_risk_epoch      int       epoch of the latest risk evaluation that found a risk (0 if none)
    last_contact_ntp       int | None   lastContactDate sent to the phone (NTP s, randomised day)
    last_risk_scoring_ntp  int | None   lastRiskScoringDate (NTP s)
    notified               bool      the phone has been told about its current risk (KPI)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.mongo import durable, find_by_ids, id_chunks

COLLECTION = "registrations"


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


# Secondary indexes, each read by a path that runs at least every matching pass. Every index costs
# every write of the collection (on SecantusDB a conditional update 0.83 -> 2.59 ms of server CPU with
# three): the /status write pays for them, so there are as few as possible. Partial: on MongoDB each
# holds only the few registrations whose flag is true, not one entry per registration.
INDEXES = {
    # find_risk_pending: every matching pass, registrations whose exposures a crashed or raced
    # evaluation left unevaluated.
    "risk_pending_true": "risk_pending",
    # find_kpi_pending: every matching pass (the KPI outbox on registrations, see _settle_kpis).
    "kpi_pending_true": "kpi_pending",
}
# Dropped: at_risk (read only by the daily job, whose scan costs less than an index entry kept up to
# date on every write) and the sparse indexes of older versions (true and false alike in them).
DROPPED_INDEXES = ("at_risk_1", "risk_pending_1", "kpi_pending_1")


async def ensure_indexes(db: AsyncDatabase) -> None:
    existing = await collection(db).index_information()
    for name in DROPPED_INDEXES:
        if name in existing:
            await collection(db).drop_index(name)
    for name, field in INDEXES.items():
        if name not in existing:
            await collection(db).create_index(
                [(field, ASCENDING)], name=name, partialFilterExpression={field: True}
            )


async def create(db: AsyncDatabase, id_a: bytes, epoch_id: int, push_info: dict[str, Any] | None) -> None:
    await durable(collection(db)).insert_one(_new(id_a, epoch_id, push_info))  # answered 201


async def create_many(db: AsyncDatabase, id_as: Sequence[bytes], epoch_id: int) -> None:
    """New registrations without push information, one ``insert_many`` (``robert seed``)."""
    if id_as:
        await collection(db).insert_many([_new(id_a, epoch_id, None) for id_a in id_as], ordered=False)


def _new(id_a: bytes, epoch_id: int, push_info: dict[str, Any] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": id_a,
        "created_epoch": epoch_id,
        "last_status_epoch": None,
        "exposures": {},
        "applied_batches": [],
        "risk_pending": False,
        "at_risk": False,
        "latest_risk_epoch": 0,
        "last_contact_ntp": None,
        "last_risk_scoring_ntp": None,
        "notified": False,
    }
    if push_info:
        doc["push_info"] = push_info
    return doc


async def get(db: AsyncDatabase, id_a: bytes) -> dict[str, Any] | None:
    return await collection(db).find_one({"_id": id_a})


async def delete(db: AsyncDatabase, id_a: bytes) -> bool:
    result = await durable(collection(db)).delete_one({"_id": id_a})  # the phone is told it is gone
    return result.deleted_count == 1


async def claim_request_time(db: AsyncDatabase, id_a: bytes, kind: str, ntp_time: int) -> bool:
    """Accept an authenticated request of ``kind`` (``unregister``, ``delete_history``) made at
    ``ntp_time`` only if it is later than the last one accepted: the same bytes replayed within the
    time tolerance are refused (as /status refuses a second poll). One conditional update; False
    for a replay or an unknown registration."""
    name = f"last_{kind}_time"
    result = await collection(db).update_one(
        {"_id": id_a, name: {"$not": {"$gte": ntp_time}}}, {"$set": {name: ntp_time}}
    )
    return result.matched_count == 1


async def clear_exposures(db: AsyncDatabase, id_a: bytes) -> bool:
    """/deleteExposureHistory: forget every exposure of this phone."""
    result = await durable(collection(db)).update_one(
        {"_id": id_a}, {"$set": {"exposures": {}, "risk_pending": False}}
    )
    return result.matched_count == 1


# --- phone API (issue 3) ------------------------------------------------------------------------


STATUS_FIELDS = {
    "last_status_epoch": 1,
    "at_risk": 1,
    "notified": 1,
    "latest_risk_epoch": 1,
    "last_contact_ntp": 1,
    "last_risk_scoring_ntp": 1,
}


async def get_for_status(db: AsyncDatabase, id_a: bytes) -> dict[str, Any] | None:
    """What /status needs of a registration (not the exposures, which may be large)."""
    return await collection(db).find_one({"_id": id_a}, STATUS_FIELDS)


async def get_many_for_status(db: AsyncDatabase, id_as: Sequence[bytes]) -> list[dict[str, Any] | None]:
    """:func:`get_for_status` of many registrations in one ``$in`` read: one document (or None) per id_A."""
    if len(id_as) <= 1:
        return [await get_for_status(db, id_a) for id_a in id_as]
    docs = await find_by_ids(collection(db), list(dict.fromkeys(id_as)), STATUS_FIELDS)
    found = {d["_id"]: d for d in docs}
    return [found.get(id_a) for id_a in id_as]


async def record_drift(db: AsyncDatabase, id_a: bytes, drift: int) -> None:
    """Remember the time drift of an authenticated request, also when it is refused (PROTOCOL.md 5)."""
    await collection(db).update_one({"_id": id_a}, {"$set": {"last_drift": drift}})


async def record_refused_status(db: AsyncDatabase, id_a: bytes, epoch_id: int, drift: int) -> None:
    """A /status refused as too soon after the previous one (PROTOCOL.md 6)."""
    await collection(db).update_one(
        {"_id": id_a}, {"$set": {"last_refused_status_epoch": epoch_id, "last_drift": drift}}
    )


async def accept_status(
    db: AsyncDatabase,
    id_a: bytes,
    previous_epoch: int | None,
    epoch_id: int,
    drift: int,
    *,
    push_info: dict[str, Any] | None = None,
    notify: bool = False,
) -> bool:
    """Record an accepted /status, only if no other poll was accepted since ``previous_epoch`` was read.

    A conditional update (compare-and-set on ``last_status_epoch``): of two concurrent polls, at most
    one passes the minimum gap. ``notify`` marks the current risk as told to the phone. Returns False
    when another poll won.
    """
    fields = _status_fields(StatusPoll(id_a, previous_epoch, epoch_id, drift, push_info, notify))
    result = await collection(db).update_one(
        {"_id": id_a, "last_status_epoch": previous_epoch}, {"$set": fields}
    )
    # matched, not modified: with a gap of 0 a second poll in the same epoch changes nothing, and
    # with a gap > 0 the new epoch always differs, so a concurrent winner makes the filter miss.
    return result.matched_count == 1


@dataclass(frozen=True, slots=True)
class StatusPoll:
    """The arguments of one :func:`accept_status`, for :func:`accept_statuses`."""

    id_a: bytes
    previous_epoch: int | None
    epoch_id: int
    drift: int
    push_info: dict[str, Any] | None = None
    notify: bool = False
    # names this accept in the document (last_status_batch): a new StatusPoll for each attempt
    write_id: bytes = dataclass_field(default_factory=lambda: os.urandom(8))


async def accept_statuses(db: AsyncDatabase, polls: Sequence[StatusPoll]) -> list[bool]:
    """:func:`accept_status` of many polls: one unordered bulk write, one result per poll, same order.

    Each update carries the same compare-and-set filter as :func:`accept_status`. A bulk write only
    counts the updates that matched; when some did not (another poll of the phone won), one read of
    ``last_status_batch`` (each poll's ``write_id``) tells which applied. Polls of a phone already in
    the bulk run after it, one by one, so that each sees the write of the one before.
    """
    if len(polls) <= 1:
        return [await _accept_one(db, p) for p in polls]
    first: dict[bytes, int] = {}
    ops = []
    for k, p in enumerate(polls):
        if p.id_a in first:
            continue
        first[p.id_a] = k
        fields = _status_fields(p)
        ops.append(UpdateOne({"_id": p.id_a, "last_status_epoch": p.previous_epoch}, {"$set": fields}))
    result = await collection(db).bulk_write(ops, ordered=False)
    if result.matched_count == len(ops):
        applied = set(first)
    else:  # rare: another poll of some phone was accepted since its registration was read
        docs = await find_by_ids(collection(db), list(first), {"last_status_batch": 1})
        applied = {d["_id"] for d in docs if d.get("last_status_batch") == polls[first[d["_id"]]].write_id}
    out = []
    for k, p in enumerate(polls):
        if first[p.id_a] == k:
            out.append(p.id_a in applied)
        else:
            out.append(await _accept_one(db, p))
    return out


async def _accept_one(db: AsyncDatabase, p: StatusPoll) -> bool:
    result = await collection(db).update_one(
        {"_id": p.id_a, "last_status_epoch": p.previous_epoch}, {"$set": _status_fields(p)}
    )
    return result.matched_count == 1  # matched, not modified: see accept_status


def _status_fields(p: StatusPoll) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "last_status_epoch": p.epoch_id,
        "last_drift": p.drift,
        "last_status_batch": p.write_id,
    }
    if p.push_info:
        fields["push_info"] = p.push_info
    if p.notify:
        fields["notified"] = True
    return fields


async def undo_status(db: AsyncDatabase, p: StatusPoll) -> bool:
    """Take back an accepted /status whose answer never reached the phone, so that its next poll is not
    refused as too soon (and its risk is still to be told). Only if that accept is still the last one
    (``last_status_batch`` is its ``write_id``). True when undone."""
    restore: dict[str, Any] = {"last_status_epoch": p.previous_epoch}
    if p.notify:
        restore["notified"] = False
    result = await collection(db).update_one(
        {"_id": p.id_a, "last_status_epoch": p.epoch_id, "last_status_batch": p.write_id},
        {"$set": restore, "$unset": {"last_status_batch": ""}},
    )
    return result.modified_count == 1


# --- matching and risk (issue 5) ----------------------------------------------------------------
# Matching adds to ``exposures`` and bumps ``exposures_version`` (int); a risk evaluation writes only if
# ``exposures_version`` is still the value it read, and bumps it, so an evaluation never hides
# exposures added meanwhile (they stay ``risk_pending``) and two evaluations of one phone never both win.
# ``risk_run`` names the evaluation that wrote last (to tell which of a bulk write's updates applied).

APPLIED_BATCHES_KEPT = 100  # ids of recent contact batches kept per registration (idempotent re-runs)
RISK_FIELDS = {
    "exposures": 1,
    "exposures_version": 1,
    "at_risk": 1,
    "latest_risk_epoch": 1,
    "last_contact_ntp": 1,
    "last_risk_scoring_ntp": 1,
    "risk_run": 1,
}


async def add_exposures(db: AsyncDatabase, batch_id: str, scores: dict[bytes, dict[int, float]]) -> int:
    """Add a contact batch's scores, ``{id_a: {epoch_id: score}}``, to the exposures (PROTOCOL.md 8 step 5).

    One unordered bulk write; each update applies only if this batch was not applied to that registration
    before, so a batch re-run after a crash counts nothing twice. Unknown (or unregistered) id_A match
    nothing: their contacts are discarded. Returns the number of registrations changed.
    """
    ops = [
        UpdateOne(
            {"_id": id_a, "applied_batches": {"$ne": batch_id}},
            {
                "$inc": {**{f"exposures.{e}": s for e, s in by_epoch.items()}, "exposures_version": 1},
                "$set": {"risk_pending": True},
                "$push": {"applied_batches": {"$each": [batch_id], "$slice": -APPLIED_BATCHES_KEPT}},
            },
        )
        for id_a, by_epoch in scores.items()
    ]
    if not ops:
        return 0
    result = await collection(db).bulk_write(ops, ordered=False)
    return result.modified_count


async def apply_batches(
    db: AsyncDatabase,
    updates: list[tuple[dict[str, Any], dict[int, float], dict[str, Any], list[int], list[str]]],
) -> int:
    """Add contact batches' scores AND write the risk evaluated with them, in one write per registration.

    ``updates``: ``(document read, {epoch_id: score} to add, risk fields to set, epochs to drop, ids of
    the batches the scores come from)``. Each applies only if the registration is unchanged since it was
    read (``exposures_version``) and none of those batches was applied to it before; the caller falls
    back to :func:`add_exposures` (batch by batch) then a fresh evaluation for the others. Returns the
    number applied. (The fast path: one write per registration instead of two.)
    """
    ops = []
    for doc, add, fields, expired, batch_ids in updates:
        update: dict[str, Any] = {
            "$inc": {**{f"exposures.{e}": s for e, s in add.items()}, "exposures_version": 1},
            "$set": {**fields, "risk_pending": False},
            "$push": {"applied_batches": {"$each": batch_ids, "$slice": -APPLIED_BATCHES_KEPT}},
        }
        if expired:
            update["$unset"] = {f"exposures.{e}": "" for e in expired}
        version = doc.get("exposures_version")
        query = {"_id": doc["_id"], "exposures_version": version, "applied_batches": {"$nin": batch_ids}}
        ops.append(UpdateOne(query, update))
    if not ops:
        return 0
    result = await collection(db).bulk_write(ops, ordered=False)
    return result.modified_count


async def find_for_risk(db: AsyncDatabase, id_as: list[bytes]) -> list[dict[str, Any]]:
    """The risk fields of these registrations (chunked ``$in`` reads, see :func:`find_by_ids`)."""
    return await find_by_ids(collection(db), id_as, RISK_FIELDS)


async def find_risk_pending(db: AsyncDatabase, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` registrations whose exposures changed since their last evaluation (indexed)."""
    return await collection(db).find({"risk_pending": True}, RISK_FIELDS).limit(limit).to_list()


async def write_risk(
    db: AsyncDatabase, updates: list[tuple[dict[str, Any], dict[str, Any], list[int]]]
) -> int:
    """Write risk decisions ``(document read, fields to set, exposure epochs to drop)`` in one bulk write.

    Each update applies only if the registration's exposures did not change since it was read; the others
    stay ``risk_pending`` for the next evaluation. Returns the number applied.
    """
    ops = []
    for doc, fields, expired in updates:
        update: dict[str, Any] = {"$set": {**fields, "risk_pending": False}, "$inc": {"exposures_version": 1}}
        if expired:
            update["$unset"] = {f"exposures.{e}": "" for e in expired}
        ops.append(UpdateOne({"_id": doc["_id"], "exposures_version": doc.get("exposures_version")}, update))
    if not ops:
        return 0
    result = await collection(db).bulk_write(ops, ordered=False)
    return result.modified_count


async def find_kpi_pending(db: AsyncDatabase, limit: int) -> list[dict[str, Any]]:
    """Registrations whose last risk write carries KPI counts not yet added (``kpi_pending``, indexed).

    The risk write sets ``kpi_pending``, ``kpi_run`` and ``kpi_counts`` with the decision itself, so a
    worker dying before it counts leaves the counts here for the next pass (an outbox).
    """
    cursor = collection(db).find({"kpi_pending": True}, {"kpi_run": 1, "kpi_counts": 1}).limit(limit)
    return await cursor.to_list()


def kpi_key(doc: dict[str, Any]) -> str:
    """The key under which the KPI counts a risk write left on ``doc`` are counted (once): its run and
    its id_A, so each document's counts are counted on their own, whatever page they were read in."""
    return f"{doc.get('kpi_run') or ''}:{bytes(doc['_id']).hex()}"


async def clear_kpi_pending(db: AsyncDatabase, id_as: list[bytes], run_id: str) -> None:
    """The counts of ``run_id`` were added: clear them (only where no later run replaced them)."""
    for chunk in id_chunks(id_as):
        await collection(db).update_many(
            {"_id": {"$in": chunk}, "kpi_run": run_id},
            {"$set": {"kpi_pending": False}, "$unset": {"kpi_run": "", "kpi_counts": ""}},
        )


async def existing(db: AsyncDatabase, id_as: Sequence[bytes], chunk: int = 25) -> set[bytes]:
    """Which of these id_A have a registration (``$in`` of at most ``chunk`` ids per read)."""
    found: set[bytes] = set()
    for start in range(0, len(id_as), chunk):
        part = list(id_as[start : start + chunk])
        async for d in collection(db).find({"_id": {"$in": part}}, {"_id": 1}):
            found.add(bytes(d["_id"]))
    return found


async def written_by_run(db: AsyncDatabase, id_as: list[bytes], run_id: str) -> set[bytes]:
    """Which of these registrations the risk evaluation ``run_id`` wrote last."""
    return {d["_id"] for d in await find_by_ids(collection(db), id_as, {"_id": 1}, also={"risk_run": run_id})}


# --- the daily job's walk (issue 12) -----------------------------------------------------------
# The daily job visits every registration. A filter on a field without an index (``at_risk``,
# ``exposures``) is one query as long as the collection (45-52 s at 1 M on SecantusDB, past the client's
# 30 s socket timeout); instead the job walks the collection in ``_id`` order, a page at a time, each
# page one short query that names the shard key, and filters in Python.

FIRST = b""  # every id_A (5 bytes) sorts after the empty binary: the start of a walk
DAILY_FIELDS = {
    "exposures": 1,
    "at_risk": 1,
    "last_contact_ntp": 1,
    "kpi_pending": 1,
    "kpi_run": 1,
    "kpi_counts": 1,
}
GAUGE_FIELDS = {"at_risk": 1, "kpi_pending": 1, "kpi_run": 1, "kpi_counts": 1}


async def page_after(
    db: AsyncDatabase, after: bytes, size: int, fields: dict[str, Any]
) -> list[dict[str, Any]]:
    """The next ``size`` registrations after id_A ``after`` (:data:`FIRST`: from the start), in ``_id``
    order, with only ``fields``: one page of a walk over the whole collection.

    ``{_id: {$gt: after}}`` sorted and limited on ``_id``: an index scan of ``size`` keys on MongoDB
    (and a range of one shard). The hint keeps SecantusDB 0.7.0b3 from sorting the matches in Python: it
    serves an ``_id`` range by walking the collection, so there a page costs one scan (BENCHMARKS.md)."""
    cursor = (
        collection(db)
        .find({"_id": {"$gt": after}}, fields)
        .sort("_id", ASCENDING)
        .hint([("_id", ASCENDING)])
        .limit(size)
    )
    return await cursor.to_list()


async def walk(
    db: AsyncDatabase, size: int, fields: dict[str, Any], after: bytes = FIRST
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every registration after ``after``, :func:`page_after` by page."""
    while True:
        page = await page_after(db, after, size, fields)
        if page:
            yield page
        if len(page) < size:
            return
        after = page[-1]["_id"]


def at_risk_counted(doc: dict[str, Any], counted: set[str]) -> bool:
    """Whether ``doc`` (read with :data:`GAUGE_FIELDS`) is at risk and its ``usersAtRisk`` count is in the
    gauge whose counted runs are ``counted``.

    A risk write that put a registration at risk carries its +1 in the KPI outbox (``kpi_pending``) until
    it is settled; those whose key (:func:`kpi_key`, or their run, as counted before keys were per
    document) is not in ``counted`` are left out, or a recount made between the write and its settling
    would count them twice."""
    if not doc.get("at_risk"):
        return False
    uncounted = (
        doc.get("kpi_pending")
        and (doc.get("kpi_counts") or {}).get("usersAtRisk") == 1
        and kpi_key(doc) not in counted
        and doc.get("kpi_run") not in counted
    )
    return not uncounted


async def clear_risks(db: AsyncDatabase, docs: list[dict[str, Any]]) -> int:
    """Clear the at-risk flag of these registrations, unless a new risk was found since they were read."""
    ops = [
        UpdateOne(
            {"_id": d["_id"], "at_risk": True, "last_contact_ntp": d.get("last_contact_ntp")},
            {"$set": {"at_risk": False, "notified": False}},
        )
        for d in docs
    ]
    if not ops:
        return 0
    result = await collection(db).bulk_write(ops, ordered=False)
    return result.modified_count


async def drop_exposure_epochs(db: AsyncDatabase, expired: dict[bytes, list[int]]) -> int:
    """Remove these exposure epochs (older than the contagious period) in one bulk write."""
    ops = [
        UpdateOne({"_id": id_a}, {"$unset": {f"exposures.{e}": "" for e in epochs}})
        for id_a, epochs in expired.items()
        if epochs
    ]
    if not ops:
        return 0
    result = await collection(db).bulk_write(ops, ordered=False)
    return result.modified_count


async def count_at_risk(db: AsyncDatabase) -> int:
    """Registrations at risk now (a scan: tests and benchmarks)."""
    return await collection(db).count_documents({"at_risk": True})


async def count_at_risk_counted(db: AsyncDatabase, counted: list[str] | None, page: int = 1000) -> int:
    """Registrations at risk whose ``usersAtRisk`` count is in the gauge (:func:`at_risk_counted`), by an
    ``_id``-ordered walk (:func:`walk`): the daily recount."""
    seen = set(counted or [])
    n = 0
    async for docs in walk(db, page, GAUGE_FIELDS):
        n += sum(1 for d in docs if at_risk_counted(d, seen))
    return n
