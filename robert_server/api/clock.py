"""``GET /api/v6/clock`` (PROTOCOL.md 6): the service start date, the server time and the epoch."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from robert_server.api.services import SERVICES, Services


def clock(svc: Services) -> dict[str, Any]:
    now = svc.time.clock.utcnow()
    return {
        "serviceStartDate": svc.time.time_start_date.isoformat(),
        "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "epoch": svc.time.current_epoch(),
    }


async def handle(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(clock(request.app[SERVICES])), content_type="application/json")
