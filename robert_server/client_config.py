"""The client configuration: name/value settings held by the server and sent to phones.

The ``config`` collection (``{_id: name, value: any JSON value}``) is returned as ``config: [{name,
value}]`` by /register and /status (PROTOCOL.md 6). Edited with ``robert config set|get|list``.
The API reads it through :class:`ConfigCache`, at most once every few seconds, not once a poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "config"


async def list_all(db: AsyncDatabase) -> list[dict[str, Any]]:
    """Every client setting as ``{name, value}``, sorted by name."""
    items = [{"name": d["_id"], "value": d["value"]} async for d in db[COLLECTION].find({})]
    return sorted(items, key=lambda i: i["name"])


async def get(db: AsyncDatabase, name: str) -> Any | None:
    doc = await db[COLLECTION].find_one({"_id": name})
    return None if doc is None else doc["value"]


async def set_value(db: AsyncDatabase, name: str, value: Any) -> None:
    await db[COLLECTION].update_one({"_id": name}, {"$set": {"value": value}}, upsert=True)


async def delete(db: AsyncDatabase, name: str) -> bool:
    return (await db[COLLECTION].delete_one({"_id": name})).deleted_count == 1


class ConfigCache:
    """The client config as sent to phones, re-read from the database at most every ``ttl`` seconds."""

    def __init__(self, db: AsyncDatabase, ttl: float = 5.0) -> None:
        self._db = db
        self._ttl = ttl
        self._value: list[dict[str, Any]] = []
        self._read_at = float("-inf")
        self._reading: asyncio.Future[list[dict[str, Any]]] | None = None
        self._generation = 0  # bumped by invalidate: a read begun before does not count

    async def get(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - self._read_at < self._ttl:
            return self._value
        # One read when the value expires, shared by every poll that comes meanwhile (not one each);
        # shielded: a caller cancelled by its deadline does not cancel the others' read.
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read(now, self._generation))
        return await asyncio.shield(self._reading)

    async def _read(self, now: float, generation: int) -> list[dict[str, Any]]:
        try:
            value = await list_all(self._db)
        finally:
            if generation == self._generation:
                self._reading = None
        if generation == self._generation:
            self._value, self._read_at = value, now
        return value

    def invalidate(self) -> None:
        self._read_at = float("-inf")
        self._reading = None
        self._generation += 1
