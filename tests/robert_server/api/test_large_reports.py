"""/report without a code cannot freeze the API (issue 10 item 3): a locked-out source is answered
before its body is read, large bodies are parsed off the event loop, and only a bounded number of them
at once per process."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from robert_server.api.uploads import UPLOADS

HELLO = {
    "timeCollectedOnDevice": 3_900_000_000,
    "timeFromHelloMessage": 1234,
    "mac": "AAAAAAA=",
    "rssiCalibrated": -60,
}


def report_body(megabytes: float) -> bytes:
    """A valid /report body of about ``megabytes`` MB, with a code nobody issued."""
    contact = {"ebid": "AAAAAAAAAAA=", "ecc": "AA==", "ids": [HELLO] * 250}
    size = len(orjson.dumps(contact)) + 1
    count = int(megabytes * 1e6 / size)
    return orjson.dumps({"token": "NO-SUCH-CODE", "contacts": [contact] * count})


async def send_head(
    base_url: str, length: int, first: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /api/v6/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
        + first
    )
    await writer.drain()
    return reader, writer


async def test_a_locked_out_source_is_answered_before_sending_its_body(api_server) -> None:
    api_server.verifier.locked.add("127.0.0.1")
    reader, writer = await send_head(api_server.base_url, 30_000_000, b"{")  # 30 MB announced, 1 byte sent
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)  # bounded: a hang fails the test
    assert head.startswith(b"HTTP/1.1 401") and b"Connection: close" in head
    assert orjson.loads(await reader.read()) == {"message": "invalid token"}
    writer.close()
    assert api_server.verifier.sources == []  # no code was tried


@pytest.mark.slow
@pytest.mark.api_settings(report_large_uploads=4, api_request_deadline=120)
async def test_clock_answers_while_large_bodies_are_parsed(api_server, http) -> None:
    body = report_body(16)
    connections = []
    for _ in range(4):
        reader, writer = await send_head(api_server.base_url, len(body))
        writer.write(body)
        connections.append((reader, writer))
    for _, writer in connections:
        await writer.drain()  # every body sent: from here on the server reads and parses them

    answers = [asyncio.create_task(reader.readuntil(b"\r\n\r\n")) for reader, _ in connections]
    clock_answers_during_parsing = 0
    while not any(a.done() for a in answers):
        assert (await api_server.phone(http).clock_info()).status == 200
        if not any(a.done() for a in answers):
            clock_answers_during_parsing += 1
    heads = await asyncio.gather(*answers)
    assert all(h.startswith(b"HTTP/1.1 401") for h in heads)  # parsed, valid, then the code refused
    for _, writer in connections:
        writer.close()
    # On the event loop, the parses held every other request for their whole length.
    assert clock_answers_during_parsing >= 10


@pytest.mark.api_settings(report_large_uploads=1)
async def test_large_uploads_over_the_bound_are_refused_before_their_body(api_server) -> None:
    _, first = await send_head(api_server.base_url, 5_000_000, b'{"contacts": [')  # takes the one slot
    uploads = api_server.app[UPLOADS]
    for _ in range(500):  # until the server reads it (bounded)
        if uploads.active == 1:
            break
        await asyncio.sleep(0.01)
    assert uploads.active == 1
    reader, writer = await send_head(api_server.base_url, 5_000_000, b"{")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 503") and b"\r\nRetry-After: " in head and b"Connection: close" in head
    writer.close()
    first.close()
