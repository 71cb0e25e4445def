"""Crypto service or database down or slow: 503 within a bounded deadline, nothing half-written, recovery."""

from __future__ import annotations

import asyncio

from aiohttp import web

from crypto_backend import protocol
from robert_common.mongo import free_port, mongo_client
from robert_server import registrations
from robert_server.api.app import create_app
from robert_server.crypto_client import CryptoClient
from tests.fixtures.api import api_settings
from tests.robert_server.test_crypto_client import GARBAGE, OddCryptoService


async def serve(app: web.Application):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_crypto_service_down_gives_503_quickly(api_server, http, crypto_service, db, tmp_path) -> None:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    settings = api_settings(crypto_service.settings, db, tmp_path / "down", crypto_timeout=0.5)
    dead = CryptoClient(f"127.0.0.1:{free_port()}", 0.5)
    runner, base = await serve(create_app(settings, clock=crypto_service.clock, db=db, crypto=dead))
    try:
        phone.base_url = base
        loop = asyncio.get_running_loop()
        started = loop.time()
        r = await phone.status()
        assert r.status == 503 and set(r.body) == {"message"}
        assert (await phone.register()).status == 503
        assert loop.time() - started < 10  # bounded by the deadlines, never a hang
        reg = (await registrations.collection(db).find({}).to_list())[0]
        assert reg["last_status_epoch"] is None
    finally:
        await runner.cleanup()
        await dead.close()


async def test_a_malformed_crypto_answer_gives_500_not_a_refusal(
    api_server, http, crypto_service, db, tmp_path
) -> None:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    odd = OddCryptoService()
    odd.answers["AuthenticateRequests"] = odd.answers["AuthenticateRequest"] = GARBAGE
    await odd.server.start()
    settings = api_settings(crypto_service.settings, db, tmp_path / "odd")
    client = CryptoClient(odd.address, 5.0)
    runner, base = await serve(create_app(settings, clock=crypto_service.clock, db=db, crypto=client))
    try:
        phone.base_url = base
        for r in (await phone.status(), await phone.unregister(), await phone.delete_history()):
            assert (r.status, r.body) == (500, {"message": "internal error"})
        reg = (await registrations.collection(db).find({}).to_list())[0]
        assert reg["last_status_epoch"] is None
    finally:
        await runner.cleanup()
        await client.close()
        await odd.server.stop(None)


async def test_api_recovers_when_the_crypto_service_returns(api_server, http) -> None:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    server = api_server.crypto.server
    await server.stop(None)
    assert (await phone.status()).status == 503
    server.listen = api_server.crypto.address
    await server.start()
    for _ in range(50):  # gRPC reconnects with a backoff
        r = await phone.status()
        if r.status != 503:
            break
        await asyncio.sleep(0.2)
    assert r.status == 200


async def test_database_down_gives_503_and_leaves_no_identity(crypto_service, http, tmp_path) -> None:
    client = mongo_client(f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", timeout_ms=300)
    dead_db = client["nothing"]
    settings = api_settings(crypto_service.settings, dead_db, tmp_path / "nodb", api_request_deadline=3.0)
    app = create_app(settings, clock=crypto_service.clock, db=dead_db, crypto=crypto_service.client)
    runner, base = await serve(app)
    try:
        from simulator.phone import Phone

        phone = Phone(
            base, await crypto_service.client.registration_public_key(), clock=crypto_service.clock, http=http
        )
        r = await phone.register()
        assert r.status == 503 and set(r.body) == {"message"}
        # The identity the crypto service created for it was deleted again: nothing half-written.
        assert await crypto_service.db["identities"].count_documents({}) == 0
    finally:
        await runner.cleanup()
        await client.close()


async def test_internal_app_health_metrics_and_kpis(api_server, http) -> None:
    from robert_server.api.internal import create_internal_app

    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    assert (await phone.status()).status == 200
    api_server.verifier.add("K1")
    assert (await phone.call("POST", "/report", {"token": "K1", "contacts": []})).status == 200
    runner, base = await serve(create_internal_app(api_server.app))
    try:
        async with http.get(base + "/health/live") as r:
            assert r.status == 200
        async with http.get(base + "/health") as r:
            assert r.status == 200
            assert (await r.json())["components"] == {"database": "UP", "crypto": "UP"}
        async with http.get(base + "/metrics") as r:
            text = await r.text()
            assert 'robert_api_requests_total{endpoint="status",status="200"}' in text
        async with http.get(base + "/internal/api/v2/kpis") as r:
            assert (await r.json())["reports"] == 1
        async with http.get(base + "/internal/api/v2/kpis?fromDate=nope") as r:
            assert r.status == 400
        await api_server.crypto.server.stop(None)
        async with http.get(base + "/health") as r:
            assert r.status == 503
            assert (await r.json())["components"]["crypto"] == "DOWN"
    finally:
        await runner.cleanup()


def test_protocol_salts_match_the_request_types() -> None:
    from robert_server.crypto_client import RequestType

    assert RequestType.STATUS == protocol.SALT_STATUS
    assert RequestType.UNREGISTER == protocol.SALT_UNREGISTER
    assert RequestType.DELETE_EXPOSURE_HISTORY == protocol.SALT_DELETE_HISTORY
