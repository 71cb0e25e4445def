"""/status micro-batches end to end: concurrent polls share one crypto call and one database round trip,
and each still gets the answer it would have had alone."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from crypto_backend import protocol
from crypto_backend.identities import COLLECTION as IDENTITIES
from robert_server import registrations


def batch_calls() -> float:
    labels = {"method": "AuthenticateRequests", "code": "OK"}
    return REGISTRY.get_sample_value("robert_crypto_rpc_total", labels) or 0.0


@pytest.mark.api_settings(status_batch_delay_ms=50)
async def test_each_poll_of_a_batch_gets_its_own_answer(api_server, http) -> None:
    phones = [api_server.phone(http) for _ in range(6)]
    for p in phones:
        assert (await p.register()).status == 201
    ok, ok2, soon, gone, drifting, keyless = phones
    assert (await soon.status()).status == 200  # its next poll is too soon
    await registrations.collection(api_server.db).delete_one({"_id": await _id_of(api_server, gone)})
    await api_server.crypto.db[IDENTITIES].delete_one({"_id": await _id_of(api_server, keyless)})
    far = api_server.clock.ntp_now() + api_server.settings.request_time_tolerance + 30

    before = batch_calls()
    answers = await asyncio.gather(
        ok.status(),
        ok2.status(),
        soon.status(),
        gone.status(),
        drifting.status(ntp_time=far),
        keyless.status(),
    )
    assert [a.status for a in answers] == [200, 200, 400, 404, 400, 430]
    assert batch_calls() - before < len(phones)  # batched (the polls arrive within 50 ms)
    assert ok.last_status["riskLevel"] == 0 and ok.last_status["tuples"] != ok2.last_status["tuples"]
    epoch = ok.epoch_now()
    docs = {d["_id"]: d async for d in registrations.collection(api_server.db).find({})}
    assert [docs[await _id_of(api_server, p)]["last_status_epoch"] for p in (ok, ok2)] == [epoch, epoch]
    assert docs[await _id_of(api_server, soon)]["last_refused_status_epoch"] == epoch
    drifted = docs[await _id_of(api_server, drifting)]
    assert drifted["last_drift"] > 0 and drifted["last_status_epoch"] is None


async def _id_of(api_server, phone) -> bytes:
    """id_A of a phone, as the server sees it (the app never learns it): decrypt its current EBID."""
    epoch, ebid, _ = phone.key_of()
    return protocol.decrypt_ebid(api_server.crypto.day_key_of_epoch(epoch), ebid)[1]
