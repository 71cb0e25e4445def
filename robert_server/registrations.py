"""The ``registrations`` collection: the one place that reads and writes it.

One document per registered phone, keyed by id_A. No key material is ever stored here (the crypto
service holds the sealed K_A,mac and K_A,tuples in its own database).

Document::

    _id                    bytes(5)  id_A
    created_epoch          int       epoch of /register
    push_info              {token, locale, timezone} | absent
    last_status_epoch      int | None   epoch of the last accepted /status
    last_refused_status_epoch int | absent
    last_drift             int       phone time minus server time (s) at the last authenticated request
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

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "registrations"


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


async def ensure_indexes(db: AsyncDatabase) -> None:
    await collection(db).create_index([("risk_pending", ASCENDING)], sparse=True)
    await collection(db).create_index([("at_risk", ASCENDING)], sparse=True)


async def create(db: AsyncDatabase, id_a: bytes, epoch_id: int, push_info: dict[str, Any] | None) -> None:
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
    await collection(db).insert_one(doc)


async def get(db: AsyncDatabase, id_a: bytes) -> dict[str, Any] | None:
    return await collection(db).find_one({"_id": id_a})


async def delete(db: AsyncDatabase, id_a: bytes) -> bool:
    result = await collection(db).delete_one({"_id": id_a})
    return result.deleted_count == 1


async def clear_exposures(db: AsyncDatabase, id_a: bytes) -> bool:
    """/deleteExposureHistory: forget every exposure of this phone."""
    result = await collection(db).update_one(
        {"_id": id_a}, {"$set": {"exposures": {}, "risk_pending": False}}
    )
    return result.matched_count == 1


# --- phone API (issue 3) ------------------------------------------------------------------------


# --- matching and risk (issue 5) ----------------------------------------------------------------
