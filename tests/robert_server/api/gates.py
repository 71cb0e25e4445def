"""Test helpers: hold calls of a real service at a gate; send a request and leave before its answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class Gated:
    """A real service, with the calls named in ``gated`` held at a gate until the test opens it."""

    def __init__(self, real: Any, *gated: str) -> None:
        self.real = real
        self.gated = gated
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = asyncio.Event()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)
        if name not in self.gated:
            return method

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            self.held.set()
            await self.gate.wait()
            return await method(*args, **kwargs)

        return held

    def close_gate(self) -> None:
        self.gate.clear()
        self.held.clear()


async def post_and_leave(base: str, path: str, body: Any, service: Gated) -> None:
    """POST ``body`` and close the connection while the request is held at ``service``'s gate; then
    open the gate: the request goes on, with nobody to answer."""
    host, port = base.removeprefix("http://").split(":")
    raw = json.dumps(body).encode()
    service.close_gate()
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /api/v6{path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    await writer.drain()
    await service.held.wait()
    writer.close()
    await writer.wait_closed()
    service.gate.set()


async def logged(caplog, message: str) -> None:
    """Wait until ``message`` is logged (bounded: the assertion fails if it never is)."""
    for _ in range(250):
        if message in caplog.messages:
            return
        await asyncio.sleep(0.02)
    assert message in caplog.messages
