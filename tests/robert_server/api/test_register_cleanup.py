"""A registration whose insert fails leaves no identity behind (issue 10 item 7).

The database refusing the registration is injected at the storage call; the crypto service and its
database are real. Its first two deletes fail as during an outage: the API retries until one succeeds.
"""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
from pymongo.errors import AutoReconnect

from crypto_backend.identities import COLLECTION as IDENTITIES
from robert_server import registrations
from robert_server.api import register
from robert_server.crypto_client import CryptoError


async def test_a_failed_registration_insert_deletes_its_identity_with_retries(api_server, monkeypatch):
    monkeypatch.setattr(register, "FORGET_FIRST_DELAY", 0.01)

    async def outage(*args: object, **kwargs: object) -> None:
        raise AutoReconnect("database down")

    monkeypatch.setattr(registrations, "create", outage)
    client = api_server.crypto.client
    real_delete = client.delete_identity
    calls = []

    async def flaky_delete(id_a: bytes) -> bool:
        calls.append(id_a)
        if len(calls) <= 2:
            raise CryptoError(grpc.StatusCode.UNAVAILABLE, "ERROR_REASON_UNSPECIFIED", "down")
        return await real_delete(id_a)

    monkeypatch.setattr(client, "delete_identity", flaky_delete)
    async with aiohttp.ClientSession() as http:
        r = await api_server.phone(http).register()
    assert r.status >= 500
    await asyncio.gather(*register._forgetting)
    assert len(calls) == 3
    assert await api_server.db[IDENTITIES].count_documents({}) == 0
