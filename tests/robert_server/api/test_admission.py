"""Admission control (issue 10 item 2): beyond ``api_max_in_progress`` requests in progress, the API
answers 503 with a jittered Retry-After at once, before reading the body; /clock is never refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.robert_server.api.gates import Gated


async def _hold_two_reports(api_server, http) -> tuple[Gated, list[asyncio.Task]]:
    """Two /report requests in progress, held in the code verifier."""
    verifier = Gated(api_server.verifier, "reserve")
    api_server.use_verifier(verifier)
    verifier.close_gate()
    phones = [api_server.phone(http) for _ in range(2)]
    held = [asyncio.create_task(p.report("NO-SUCH-CODE")) for p in phones]
    while len(verifier.calls) < 2:
        await verifier.held.wait()
        verifier.held.clear()
    return verifier, held


@pytest.mark.api_settings(api_max_in_progress=2, api_retry_after_max=7)
async def test_requests_over_the_bound_are_refused_at_once_with_retry_after(api_server, http) -> None:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    verifier, held = await _hold_two_reports(api_server, http)
    retry_after = set()
    for _ in range(20):
        async with http.post(f"{api_server.base_url}/api/v6/status", json=phone.status_body()) as r:
            assert r.status == 503 and (await r.json()) == {"message": "service overloaded, retry later"}
            retry_after.add(int(r.headers["Retry-After"]))
    assert retry_after <= set(range(1, 8)) and len(retry_after) > 1  # jittered
    assert (await phone.clock_info()).status == 200  # exempt
    assert not any(t.done() for t in held)  # all of this while the two were in progress
    verifier.gate.set()
    assert [(await t).status for t in held] == [401, 401]
    assert (await phone.status()).status == 200  # admitted again


@pytest.mark.api_settings(api_max_in_progress=2)
async def test_a_refusal_does_not_wait_for_the_body(api_server, http) -> None:
    verifier, held = await _hold_two_reports(api_server, http)
    host, port = api_server.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/v6/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 30000000\r\n\r\n{"  # 30 MB announced, 1 byte sent
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)  # bounded: a hang fails the test
    assert head.startswith(b"HTTP/1.1 503") and b"\r\nRetry-After: " in head  # not the deadline's 503
    writer.close()
    verifier.gate.set()
    await asyncio.gather(*held)
