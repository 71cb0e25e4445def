"""Large /report bodies: a bounded number at once per process, parsed in worker processes (issue 10
item 3).

A /report body may be up to ``report_max_body_bytes`` (32 MiB) of JSON. Parsed and validated on the
event loop, one such body stalled every other request for seconds and took hundreds of MiB of Python
objects. Here a body over :data:`LARGE_BODY` (or of unknown length) needs one of
``report_large_uploads`` slots, taken before it is read; without a free slot the upload is refused at
once (503, ``Retry-After``) and its body never read. The body is read without blocking (it arrives in
chunks), then parsed, validated and packed (``validation.parse_report``) in a worker process: the
event loop only receives the packed contacts, a few bytes per HELLO. Small bodies, the usual case, are
parsed on the loop (a worker would cost more than it saves).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from aiohttp import web

from robert_server.api import validation as v
from robert_server.api.errors import ApiError, unavailable
from robert_server.api.services import SERVICES

log = logging.getLogger("robert.api")

LARGE_BODY = 64 * 1024  # bytes: above, a body is read in a slot and parsed in a worker process


class Uploads:
    """The slots for large bodies and the worker processes that parse them (started at first use)."""

    def __init__(self, slots: int, retry_after_max: int) -> None:
        self.slots = slots
        self.retry_after_max = retry_after_max
        self.active = 0
        self._pool: ProcessPoolExecutor | None = None

    async def parse_report(self, request: web.Request, limit: int) -> v.ParsedReport:
        """The /report body of ``request``: 415, 413, 400 as ``validation.read_json``; 503 when every
        slot for large bodies is taken."""
        v.check_body_headers(request, limit)
        length = request.content_length
        if length is not None and length <= LARGE_BODY:
            return v.parse_report(await v.read_body(request.content, limit))
        if self.active >= self.slots:
            log.info("large upload refused: every slot taken")
            retry_after = str(random.randint(1, self.retry_after_max))  # noqa: S311 - jitter, not secret
            raise ApiError(503, "too many uploads in progress, retry later", {"Retry-After": retry_after})
        self.active += 1
        try:
            raw = await v.read_body(request.content, limit)
            return await self._in_worker(raw)
        finally:
            self.active -= 1

    async def _in_worker(self, raw: bytes) -> v.ParsedReport:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # never fork a process with gRPC threads
            # One body per worker: the memory of a parse goes back to the system with its process.
            self._pool = ProcessPoolExecutor(self.slots, mp_context=context, max_tasks_per_child=1)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, parse_in_worker, raw)
        except BrokenProcessPool:
            log.error("a report parsing worker died: workers restarted")
            self._pool = None
            raise unavailable() from None
        if isinstance(result, tuple):
            raise ApiError(*result)
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def parse_in_worker(raw: bytes) -> v.ParsedReport | tuple[int, str]:
    """``validation.parse_report`` in a worker process; an error as ``(status, message)``."""
    try:
        return v.parse_report(raw)
    except ApiError as e:
        return e.status, e.message


UPLOADS: web.AppKey[Uploads] = web.AppKey("uploads", Uploads)


def setup(app: web.Application) -> None:
    """Give the app its :class:`Uploads`; call it after the cleanup context that sets SERVICES."""
    app.cleanup_ctx.append(_uploads)


async def _uploads(app: web.Application) -> AsyncIterator[None]:
    settings = app[SERVICES].settings
    uploads = app[UPLOADS] = Uploads(settings.report_large_uploads, settings.api_retry_after_max)
    try:
        yield
    finally:
        uploads.close()
