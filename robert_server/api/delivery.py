"""Answers the handler writes itself, so that it knows whether they went out (issue 10 item 1).

aiohttp writes a returned response after the handler; by then a request that wrote something
(an accepted /status, a new registration, a used code) can no longer take it back if the answer is
lost: the phone, told nothing, retries and finds itself refused. A handler that must undo a lost answer
writes it with :func:`deliver` and, when that fails or its deadline ends first, undoes in the
background (:func:`in_background`: it may run in a cancelled task), as it does what must follow a
delivered answer (the error middleware could not answer a failure of it anyway). Returning the
delivered response to aiohttp is harmless: a response already sent is not sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from aiohttp import web

log = logging.getLogger("robert.api")

DELIVERED: web.RequestKey[web.StreamResponse] = web.RequestKey("delivered", web.StreamResponse)
UNDOING: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("undoing", set)


def setup(app: web.Application) -> None:
    """Keep the undo tasks of ``app``, waited for when it stops."""
    app[UNDOING] = set()
    app.cleanup_ctx.append(_wait_undoing)


async def _wait_undoing(app: web.Application) -> AsyncIterator[None]:
    yield
    while app[UNDOING]:
        await asyncio.gather(*app[UNDOING], return_exceptions=True)


async def deliver(request: web.Request, response: web.StreamResponse) -> bool:
    """Write ``response`` now; False when the phone is gone before all of it could be written."""
    request[DELIVERED] = response  # from here on, the error middleware answers nothing else
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        return False
    return True


def in_background(request: web.Request, work: Awaitable[Any], what: str) -> None:
    """Run ``work`` in a task of its own (``what`` names it in the log if it fails)."""

    async def run() -> None:
        try:
            await work
        except Exception as e:  # noqa: BLE001 - logged; nobody is waiting for it
            log.error("background work failed", extra={"what": what, "error": type(e).__name__})

    tasks = request.app[UNDOING]
    task = asyncio.get_running_loop().create_task(run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
