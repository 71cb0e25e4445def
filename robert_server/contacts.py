"""The ``contacts`` collection: uploaded contacts waiting for matching. The one place that touches it.

``/report`` stores a report as one or more batch documents of at most ``BATCH_SIZE`` contacts; the
matching worker claims batches with a lease, processes them, and deletes them. HELLOs are stored
packed (fixed-size big-endian records) to keep documents small and fast to encode.

Batch document::

    _id           str       "<report_id>:<index>": a retried upload of the same report cannot duplicate
    report_id     str       opaque id of the report (derived from the code, never the code itself)
    received_at   datetime
    contacts      [ {ebid: bytes(8), ecc: bytes(1), n: int,
                     t: bytes(4n)  timeCollectedOnDevice, uint32 BE,
                     th: bytes(2n) timeFromHelloMessage, uint16 BE,
                     mac: bytes(5n),
                     rssi: bytes(2n) rssiCalibrated, int16 BE} ]
    lease_until   datetime  unclaimed batches have a lease in the past
    lease_owner   str | None
    attempts      int
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

COLLECTION = "contacts"
BATCH_SIZE = 100
UNCLAIMED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Hello:
    time_collected: int  # NTP seconds, uint32
    time_from_hello: int  # uint16
    mac: bytes  # 5 bytes
    rssi: int  # rssiCalibrated


@dataclass(frozen=True, slots=True)
class Contact:
    ebid: bytes  # 8 bytes
    ecc: bytes  # 1 byte
    hellos: Sequence[Hello]


def pack_contact(c: Contact) -> dict[str, Any]:
    n = len(c.hellos)
    return {
        "ebid": c.ebid,
        "ecc": c.ecc,
        "n": n,
        "t": struct.pack(f">{n}I", *(h.time_collected for h in c.hellos)),
        "th": struct.pack(f">{n}H", *(h.time_from_hello for h in c.hellos)),
        "mac": b"".join(h.mac for h in c.hellos),
        "rssi": struct.pack(f">{n}h", *(h.rssi for h in c.hellos)),
    }


def unpack_contact(d: dict[str, Any]) -> Contact:
    n = d["n"]
    t = struct.unpack(f">{n}I", d["t"])
    th = struct.unpack(f">{n}H", d["th"])
    rssi = struct.unpack(f">{n}h", d["rssi"])
    mac = d["mac"]
    hellos = [Hello(t[i], th[i], mac[5 * i : 5 * i + 5], rssi[i]) for i in range(n)]
    return Contact(d["ebid"], d["ecc"], hellos)


def collection(db: AsyncDatabase) -> AsyncCollection:
    return db[COLLECTION]


async def ensure_indexes(db: AsyncDatabase) -> None:
    await collection(db).create_index([("lease_until", ASCENDING)])
    await collection(db).create_index([("report_id", ASCENDING)])


async def store_report(
    db: AsyncDatabase, report_id: str, contacts: Sequence[Contact], received_at: dt.datetime
) -> int:
    """Store a report's contacts durably; returns the number of batch documents.

    Idempotent: storing the same report_id again (a retried upload) inserts nothing new.
    """
    docs = [
        {
            "_id": f"{report_id}:{i // BATCH_SIZE}",
            "report_id": report_id,
            "received_at": received_at,
            "contacts": [pack_contact(c) for c in contacts[i : i + BATCH_SIZE]],
            "lease_until": UNCLAIMED,
            "lease_owner": None,
            "attempts": 0,
        }
        for i in range(0, len(contacts), BATCH_SIZE)
    ]
    if not docs:
        return 0
    try:
        await collection(db).insert_many(docs, ordered=False)
    except BulkWriteError as e:
        if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
            raise  # anything but "already stored" is a real failure
    return len(docs)


async def delete_report(db: AsyncDatabase, report_id: str) -> None:
    """Undo a store_report (the upload failed after storing, e.g. the code was consumed meanwhile)."""
    await collection(db).delete_many({"report_id": report_id})


# --- matching worker (issue 5): claims with a lease, completion ----------------------------------
