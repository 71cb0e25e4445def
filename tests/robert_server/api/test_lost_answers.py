"""A request whose answer never reaches the phone leaves no trace that blocks the phone's retry (issue 10
item 1): the request deadline passes while a /status batch runs, or the phone goes away before its
answer is written. The crypto service and the database are real; a gate in front of the crypto client
holds a batch for as long as the test needs."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web

from crypto_backend.identities import COLLECTION as IDENTITIES
from robert_server import contacts, kpis, registrations
from robert_server.api.app import create_app
from tests.fixtures.api import api_settings
from tests.robert_server.api.gates import Gated, logged, post_and_leave


@pytest.fixture
async def gated(crypto_service, db, tmp_path):
    """(base URL, gated crypto client) of a real API whose request deadline is 0.5 s."""
    settings = api_settings(crypto_service.settings, db, tmp_path / "gated", api_request_deadline=0.5)
    crypto = Gated(crypto_service.client, "authenticate_many", "create_registration")
    app = create_app(settings, clock=crypto_service.clock, db=db, crypto=crypto)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", crypto
    finally:
        await runner.cleanup()


async def _last_status_epoch(db, phone_count: int = 1) -> Any:
    docs = await registrations.collection(db).find({}).to_list()
    assert len(docs) == phone_count
    return docs[0]["last_status_epoch"]


async def test_a_poll_answered_503_does_not_lock_the_phone_out(api_server, gated, http, db) -> None:
    base, crypto = gated
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    phone.base_url = base
    crypto.close_gate()
    r = await phone.status()  # its batch is held past the request deadline
    assert r.status == 503
    crypto.gate.set()  # the batch goes on, with nobody waiting for its answer
    api_server.clock.advance(1)  # a fresh request time and MAC
    r = await phone.status()  # batched after the held one: sees whatever it wrote
    assert r.status == 200, r.body
    assert await _last_status_epoch(db) is not None


async def test_an_accepted_poll_whose_phone_left_is_undone(api_server, gated, http, db, caplog) -> None:
    caplog.set_level(logging.INFO, logger="robert")
    base, crypto = gated
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    # accepted and written (well within the deadline), then the answer cannot go out
    await post_and_leave(base, "/status", phone.status_body(), crypto)
    await logged(caplog, "status answer not delivered: poll undone")
    assert await _last_status_epoch(db) is None
    phone.base_url = base
    api_server.clock.advance(1)
    r = await phone.status()
    assert r.status == 200, r.body


async def test_a_registration_whose_answer_is_lost_is_forgotten(api_server, gated, http, db, caplog) -> None:
    caplog.set_level(logging.INFO, logger="robert")
    base, crypto = gated
    phone = api_server.phone(http)
    await post_and_leave(base, "/register", phone.register_body(), crypto)
    await logged(caplog, "register answer not delivered: registration undone")
    assert await registrations.collection(db).count_documents({}) == 0
    assert await api_server.crypto.db[IDENTITIES].count_documents({}) == 0
    assert (await phone.register()).status == 201  # the retry: the same key, a new identity


async def test_a_report_whose_answer_is_lost_can_be_repeated(api_server, http, db, caplog) -> None:
    caplog.set_level(logging.INFO, logger="robert")
    verifier = Gated(api_server.verifier, "reserve")
    api_server.use_verifier(verifier)  # type: ignore[arg-type]
    verifier.real.add("CODE1")
    phone, other = api_server.phone(http), api_server.phone(http)
    for p in (phone, other):
        assert (await p.register()).status == 201
    phone.hear(other.hello(), -60)
    await post_and_leave(api_server.base_url, "/report", phone.report_body("CODE1"), verifier)
    await logged(caplog, "report answer not delivered: code released")
    # Counted with its contacts (it used to be counted after the answer: an API killed in between
    # lost the count); counted once, whatever the retries.
    assert (await kpis.report(db))["reports"] == 1
    r = await phone.report("CODE1")  # the phone never got its answer: it sends the same report again
    assert r.status == 200, r.body
    stored = await contacts.collection(db).find({}).to_list()
    assert len(stored) == 1 and len(stored[0]["contacts"]) == 1  # stored once
    assert (await phone.report("CODE1")).status == 401  # answered: now the code is used
    assert (await kpis.report(db))["reports"] == 1
