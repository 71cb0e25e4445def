"""Admission control: a bounded number of phone API requests in progress per process (issue 10 item 2).

Under a burst, queueing every request makes every answer late: the deadline then refuses them after
the server has done their work. Instead a request beyond ``api_max_in_progress`` is refused at once,
before its body is read: ``503`` with a ``Retry-After`` drawn at random in [1, ``api_retry_after_max``]
seconds, so that the refused phones do not come back in one wave. The requests admitted keep the
latency of a loaded, not an overloaded, server. Cheap endpoints that touch neither the database nor
the crypto service (``/clock``, the OpenAPI document) are never refused.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter

log = logging.getLogger("robert.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXEMPT = frozenset({"clock", "openapi"})  # route names
SHED = Counter("robert_api_shed", "Phone API requests refused by admission control (503)", ["endpoint"])
OVERLOADED = orjson.dumps({"message": "service overloaded, retry later"})


class Admission:
    """Counts the requests in progress; refuses those over ``limit``."""

    def __init__(self, limit: int, retry_after_max: int, rng: random.Random | None = None) -> None:
        self.limit = limit
        self.retry_after_max = retry_after_max
        self.in_progress = 0
        self._rng = rng or random.Random()

    def refusal(self, request: web.Request) -> web.Response:
        retry_after = self._rng.randint(1, self.retry_after_max)
        response = web.Response(
            status=503,
            body=OVERLOADED,
            content_type="application/json",
            headers={"Retry-After": str(retry_after)},
        )
        if not request.content.is_eof():
            response.force_close()  # the unread body is not read (nor waited for): the connection ends
        return response

    def middleware(self) -> Middleware:
        @web.middleware
        async def admission(request: web.Request, handler: Handler) -> web.StreamResponse:
            name = request.match_info.route.name
            if name in EXEMPT:
                return await handler(request)
            if self.in_progress >= self.limit:
                SHED.labels(name or "unmatched").inc()
                return self.refusal(request)
            self.in_progress += 1
            try:
                return await handler(request)
            finally:
                self.in_progress -= 1

        return admission
