"""The client config cache (robert_server.client_config.ConfigCache), on the real database."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_server import client_config
from robert_server.client_config import ConfigCache


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the database reads of the cache."""
    count: list[int] = []
    real = client_config.list_all

    async def counting(db: AsyncDatabase) -> list[dict]:
        count.append(1)
        return await real(db)

    monkeypatch.setattr(client_config, "list_all", counting)
    return count


async def test_concurrent_gets_share_one_read(db: AsyncDatabase, reads: list[int]) -> None:
    await client_config.set_value(db, "app.x", 1)
    cache = ConfigCache(db)
    got = await asyncio.gather(*(cache.get() for _ in range(20)))
    assert all(g == [{"name": "app.x", "value": 1}] for g in got)
    assert len(reads) == 1
    await cache.get()
    assert len(reads) == 1  # within the ttl: no read


async def test_a_cancelled_caller_does_not_cancel_the_shared_read(
    db: AsyncDatabase, reads: list[int]
) -> None:
    await client_config.set_value(db, "app.x", 1)
    cache = ConfigCache(db)
    first = asyncio.ensure_future(cache.get())
    second = asyncio.ensure_future(cache.get())
    await asyncio.sleep(0)
    first.cancel()
    assert await second == [{"name": "app.x", "value": 1}]
    assert len(reads) == 1


async def test_invalidate_reads_again(db: AsyncDatabase, reads: list[int]) -> None:
    cache = ConfigCache(db)
    assert await cache.get() == []
    await client_config.set_value(db, "app.x", 2)
    assert await cache.get() == []  # cached
    cache.invalidate()
    assert await cache.get() == [{"name": "app.x", "value": 2}]
    assert len(reads) == 2
