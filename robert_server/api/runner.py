"""``ApiRunner``: aiohttp's AppRunner, with malformed HTTP answered by a short fixed 400.

aiohttp answers a request it cannot parse itself, before any application code: a ``text/plain`` 400
that quotes the offending bytes, logged at ERROR with a traceback, with its ``Server`` header. From the
internet such requests are routine (scanners, TLS on a plain port) and what they carry is not ours to
echo or to keep: here they get ``{"message": "malformed HTTP request"}`` and one INFO line with the
error's type only.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from robert_server.api.errors import SERVER, error_response

log = logging.getLogger("robert.api")


class _QuietHandler(RequestHandler):  # type: ignore[type-arg]
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is under way: the connection is broken
            raise ConnectionError("response already started")
        if status == 500:
            log.error("unexpected error outside the handlers", extra={"error": type(exc).__name__})
            response = error_response(500, "internal error")
        else:
            log.info("malformed HTTP request", extra={"status": status, "error": type(exc).__name__})
            response = error_response(status, "malformed HTTP request")
        response.headers["Server"] = SERVER
        response.force_close()
        return response


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:  # type: ignore[type-arg]
        return _QuietHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """An AppRunner whose connections answer unparsable requests with a short JSON 400 (see above)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _QuietServer  # same object, only the connection handler it makes differs
        return server
