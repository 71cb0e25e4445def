"""HTTP details of the phone API (issue 10 item 8): 408 for a body not sent in time, ``Allow`` on 405,
no software versions in ``Server``, malformed HTTP answered short and logged quietly, and replayed
/unregister or /deleteExposureHistory bytes refused."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest


async def raw(base_url: str, data: bytes) -> tuple[bytes, bytes]:
    """Send ``data``; the answer's head and body (read until the server closes)."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    body = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return head, body


@pytest.mark.api_settings(api_request_deadline=0.5)
async def test_a_body_not_sent_in_time_gets_408_quietly(api_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="robert")
    head, body = await raw(
        api_server.base_url,
        b"POST /api/v6/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"ebid":',
    )
    assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
    assert orjson.loads(body) == {"message": "request body not received in time"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("robert")]


async def test_405_names_the_allowed_methods_and_server_names_no_software(api_server, http) -> None:
    async with http.get(f"{api_server.base_url}/api/v6/status") as r:
        assert r.status == 405 and r.headers["Allow"] == "POST"
        assert r.headers["Server"] == "robert"
    for path in ("/api/v6/clock", "/nowhere"):
        async with http.get(api_server.base_url + path) as r:
            assert r.headers["Server"] == "robert"


async def test_malformed_http_gets_a_short_fixed_400_and_an_info_line(api_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret = b"SECRET-BYTES"
    head, body = await raw(
        api_server.base_url, b"GET /api/v6/clock HTTP/1.1\r\nHost: x\r\n" + secret + b" bad header\r\n\r\n"
    )
    assert (
        head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
        and b"application/json" in head
        and b"\r\nServer: robert\r\n" in head
    )
    assert orjson.loads(body) == {"message": "malformed HTTP request"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "malformed HTTP request" in caplog.messages
    assert not any(secret.decode() in r.getMessage() or r.exc_info for r in caplog.records)


async def test_replayed_delete_history_bytes_are_refused(api_server, http) -> None:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    body = phone.auth_body(0x04)
    url = f"{api_server.base_url}/api/v6/deleteExposureHistory"
    async with http.post(url, json=body) as r:
        assert r.status == 200
    async with http.post(url, json=body) as r:  # the same bytes, within the time tolerance
        assert r.status == 400 and (await r.json()) == {"message": "request time already used"}
    api_server.clock.advance(1)
    assert (await phone.delete_history()).status == 200  # a new request: accepted


async def test_replayed_unregister_bytes_are_accepted_once(api_server, http) -> None:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    body = phone.auth_body(0x03)
    url = f"{api_server.base_url}/api/v6/unregister"

    async def post() -> int:
        async with http.post(url, json=body) as r:
            return r.status

    statuses = await asyncio.gather(*(post() for _ in range(4)))
    assert statuses.count(200) == 1, statuses
