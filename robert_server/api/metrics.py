"""Prometheus metrics of the phone API (served by the internal app, never on the phone port)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter, Histogram

REQUESTS = Counter("robert_api_requests", "Phone API requests", ["endpoint", "status"])
LATENCY = Histogram(
    "robert_api_request_seconds",
    "Phone API request latency",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DUMMY_REPORTS = Counter(
    "robert_api_dummy_reports",
    "Dummy /report uploads answered (recognised after reading the body; nothing stored, no code, no KPI)",
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The labelled series of each (endpoint, status): looked up once, not at every request (``labels``
# takes a lock and checks its arguments each time). Bounded: endpoints are route names.
_series: dict[tuple[str, int], tuple[Counter, Histogram]] = {}


def _series_of(name: str, status: int) -> tuple[Counter, Histogram]:
    series = _series.get((name, status))
    if series is None:
        series = _series[name, status] = (REQUESTS.labels(name, str(status)), LATENCY.labels(name))
    return series


def endpoint_name(request: web.Request) -> str:
    """The route's name (never the raw path: ids in paths would explode the label set)."""
    route = request.match_info.route
    return route.name or ("unmatched" if route.resource is None else route.resource.canonical)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        requests, latency = _series_of(endpoint_name(request), status)
        requests.inc()
        latency.observe(time.perf_counter() - started)
