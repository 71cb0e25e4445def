"""The one error type of the phone API, and the middleware that turns errors into responses.

Handlers and services raise :class:`ApiError` with the status code PROTOCOL.md section 6 gives; the
middleware answers ``{"message": ...}`` with that status. Anything else becomes a short 500 (or 503 for
an unreachable database or crypto service, or a request that outlived its deadline): never a stack
trace, never a value from the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

from robert_server.api.delivery import DELIVERED

log = logging.getLogger("robert.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The loop time (``loop.time()``) at which the request's deadline ends: work not done by then is wasted.
DEADLINE: web.RequestKey[float] = web.RequestKey("deadline", float)

# PyMongo errors that mean "the database is down or slow", not "the request is wrong".
DB_UNAVAILABLE = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError)


class ApiError(Exception):
    """An HTTP error answered to the phone: ``status`` and a short message (no request values)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unavailable(message: str = "service temporarily unavailable") -> ApiError:
    return ApiError(503, message)


SERVER = "robert"  # the Server header of every answer: no software names or versions


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: replace aiohttp's ``Server: Python/x aiohttp/y``."""
    response.headers["Server"] = SERVER


def error_response(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"message": message}), content_type="application/json"
    )


def make_error_middleware(deadline: float) -> Middleware:
    """Map every failure of a handler to a status code, under a per-request deadline (503 when over)."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        answer = await answer_errors(request, handler)
        sent = request.get(DELIVERED)  # the handler wrote its answer itself (delivery.py): no other
        return answer if sent is None else sent

    async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            async with asyncio.timeout(deadline) as scope:
                request[DEADLINE] = scope.when() or 0.0
                return await handler(request)
        except ApiError as e:
            response = error_response(e.status, e.message)
            response.headers.update(e.headers)
            if not request.content.is_eof():  # answered before its body was read: not read at all
                response.force_close()
            return response
        except web.HTTPException as e:  # aiohttp's own: 404 no route, 405 method, 413 too large ...
            if e.status < 400:
                raise
            response = error_response(e.status, e.reason)
            if "Allow" in e.headers:  # 405: the methods the resource has
                response.headers["Allow"] = e.headers["Allow"]
            return response
        except TimeoutError:
            if not request.content.is_eof():  # the client did not send its body in time: its fault
                log.info("request body not received in time", extra={"path": request.path})
                response = error_response(408, "request body not received in time")
                response.force_close()
                return response
            log.warning("request over its deadline", extra={"path": request.path})
            return error_response(503, "service temporarily unavailable")
        except DB_UNAVAILABLE as e:
            log.warning("database unavailable", extra={"path": request.path, "error": type(e).__name__})
            return error_response(503, "service temporarily unavailable")
        except Exception as e:  # noqa: BLE001 - the last line of defence: a short 500, the type in the log
            log.error("unexpected error", extra={"path": request.path, "error": type(e).__name__})
            return error_response(500, "internal error")

    return errors
