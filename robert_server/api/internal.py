"""The internal app, on ``metrics_host:metrics_port`` (never exposed to phones).

- ``GET /health/live``: the process answers (liveness);
- ``GET /health`` and ``/health/ready``: readiness: the database answers a ping and the crypto service
  its public key, each within a short deadline; 200 or 503 with one line per dependency;
- ``GET /metrics``: Prometheus metrics of this process;
- ``GET /internal/api/v2/kpis[?fromDate=YYYY-MM-DD&toDate=YYYY-MM-DD]``: the KPI totals
  (robert_server.kpis.report).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from robert_server import kpis
from robert_server.api.errors import error_response, server_header
from robert_server.api.services import SERVICES, Services

log = logging.getLogger("robert.api")

API_APP = web.AppKey("api_app", web.Application)
CHECK_DEADLINE = 2.0


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _services(request: web.Request) -> Services | None:
    api = request.app[API_APP]
    return api.get(SERVICES)


async def _check(coro: object) -> str:
    try:
        async with asyncio.timeout(CHECK_DEADLINE):
            await coro  # type: ignore[misc]
        return "UP"
    except Exception as e:  # noqa: BLE001 - any failure means "not ready"
        log.warning("dependency not ready", extra={"error": type(e).__name__})
        return "DOWN"


async def live(request: web.Request) -> web.Response:
    return _json({"status": "UP"})


async def ready(request: web.Request) -> web.Response:
    svc = _services(request)
    if svc is None:
        return _json({"status": "DOWN", "components": {"api": "STARTING"}}, 503)
    components = {
        "database": await _check(svc.db.command("ping")),
        "crypto": await _check(svc.crypto.registration_public_key()),
    }
    up = all(v == "UP" for v in components.values())
    return _json({"status": "UP" if up else "DOWN", "components": components}, 200 if up else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _date(request: web.Request, name: str) -> dt.date | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise web.HTTPBadRequest(reason=f"invalid {name}") from None


async def kpi_report(request: web.Request) -> web.Response:
    svc = _services(request)
    if svc is None:
        return error_response(503, "starting")
    try:
        since, until = _date(request, "fromDate"), _date(request, "toDate")
    except web.HTTPBadRequest as e:
        return error_response(400, e.reason)
    return _json(await kpis.report(svc.db, since, until))


def create_internal_app(api_app: web.Application) -> web.Application:
    """The internal app of one API process; it uses ``api_app``'s services once that app has started."""
    app = web.Application()
    app.on_response_prepare.append(server_header)
    app[API_APP] = api_app
    app.router.add_get("/health", ready)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/health/live", live)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/internal/api/v2/kpis", kpi_report)
    return app
