"""``POST /api/v6/report`` (PROTOCOL.md 6 and 7): a diagnosed phone uploads the HELLOs it heard.

A locked-out source is refused before its body is read; large bodies are parsed in worker processes
(robert_server/api/uploads.py). The code is reserved, the contacts stored durably for matching under
the reservation's report id, and only once the answer is written is the code consumed; if storing
fails or the answer is lost, the code is released: the phone's retry of the same report stores nothing
twice (same report id) and is answered 200, instead of 401 for a code its own lost upload used.

A body with ``"dummy": true`` is a fake upload (README, "Privacy on the wire"): it is read and validated
like a real one, then answered like one (200, the same length, after a time drawn from real uploads':
robert_server/api/dummies.py) with nothing stored, no code looked at, no KPI and no rate-limit count; only
the ``robert_api_dummy_reports`` metric counts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from robert_server import contacts, kpis
from robert_server.api import padding
from robert_server.api import validation as v
from robert_server.api.delivery import deliver, in_background
from robert_server.api.dummies import LatencyReservoir
from robert_server.api.errors import ApiError
from robert_server.api.metrics import DUMMY_REPORTS
from robert_server.api.services import SERVICES, Services
from robert_server.api.uploads import UPLOADS
from robert_server.codes import sources
from robert_server.codes.verifier import Reservation

log = logging.getLogger("robert.api")

DUMMY_ANSWER = {"success": True, "message": "Successful operation"}  # padded to a real answer's length
REAL_TIMES: web.AppKey[LatencyReservoir] = web.AppKey("report_real_times")


def setup(app: web.Application) -> None:
    """Give the app the reservoir of real upload times that dummies are answered after."""
    app[REAL_TIMES] = LatencyReservoir()


async def report(svc: Services, parsed: v.ParsedReport, source: str) -> tuple[Reservation, dict[str, Any]]:
    """Reserve the code and store the contacts: the reservation (to :func:`confirm` once the answer
    is delivered, else to release) and the answer."""
    reservation = await svc.verifier.reserve(parsed.token, source)
    if reservation is None:
        log.info("report refused: invalid code")
        raise ApiError(401, "invalid token")
    try:
        await contacts.store_packed(svc.db, reservation.report_id, parsed.packed, svc.time.clock.utcnow())
        await _count(svc, reservation.report_id)
        answer = {
            "success": True,
            "message": "Successful operation",
            "reportValidationToken": svc.tokens.report_validation_token(svc.time.clock.now()),
        }
    except BaseException:
        await asyncio.shield(svc.verifier.release(reservation))
        raise
    log.info(
        "report stored",
        extra={"contacts": len(parsed.packed), "hellos": parsed.hellos, "kind": reservation.kind},
    )
    return reservation, answer


async def _count(svc: Services, report_id: str) -> None:
    """Count the report with its contacts, once per report id and on the day they were first stored:
    a retry after a lost answer, or after the API died, adds nothing. (Counting once the answer was
    out lost the counts of an API killed in between.)"""
    first = await contacts.received_at(svc.db, report_id) or svc.time.clock.utcnow()
    await kpis.increment_once_keys(svc.db, first.date(), [f"report:{report_id}"], {"reports": 1}, {})


async def confirm(svc: Services, reservation: Reservation) -> None:
    """The answer went out: the code is used now."""
    if not await svc.verifier.confirm(reservation):
        # The reservation lapsed and another upload of the same code took it: that upload stores
        # under the same report id, so these contacts are not stored twice. Still a success.
        log.info("report confirmed by a concurrent upload of the same code")


async def release(svc: Services, reservation: Reservation) -> None:
    """The answer was lost: free the code for the phone's retry (which stores nothing twice)."""
    await svc.verifier.release(reservation)
    log.info("report answer not delivered: code released")


async def handle(request: web.Request) -> web.Response:
    started = time.monotonic()
    svc = request.app[SERVICES]
    trusted = sources.trusted_networks(tuple(svc.settings.trusted_proxies))
    source = sources.source_of(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
    if await svc.verifier.locked_out(source):  # before reading (up to 32 MiB of) its body
        log.info("report refused: source locked out")
        raise ApiError(401, "invalid token")  # as a refused code: no hint of why
    parsed = await request.app[UPLOADS].parse_report(request, svc.settings.report_max_body_bytes)
    size = request.content_length or 0
    shape = padding.report_shape(svc.tokens)
    if parsed.dummy:
        DUMMY_REPORTS.inc()
        answer_at = started + request.app[REAL_TIMES].sample(size)
        await asyncio.sleep(max(0.0, answer_at - time.monotonic()))
        return web.Response(body=shape.dumps(DUMMY_ANSWER), content_type="application/json")
    reservation, result = await report(svc, parsed, source)
    padded = shape.dumps(result)  # constant length (see padding.py)
    request.app[REAL_TIMES].record(size, time.monotonic() - started)
    response = web.Response(body=padded, content_type="application/json")
    delivered = False
    try:
        delivered = await deliver(request, response)
    finally:
        if not delivered:  # in a task of its own: this one may be cancelled
            in_background(request, release(svc, reservation), "report release")
    if delivered:
        await confirm(svc, reservation)  # if it fails, the reservation lapses (see codes/verifier.py)
    return response
