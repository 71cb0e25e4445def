"""``POST /api/v6/report`` (PROTOCOL.md 6 and 7): a diagnosed phone uploads the HELLOs it heard.

The code is reserved, the contacts stored durably for matching under the reservation's report id,
and only then is the code consumed; if storing fails the code is released for a retry.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from robert_server import contacts, kpis
from robert_server.api import padding
from robert_server.api import validation as v
from robert_server.api.errors import ApiError
from robert_server.api.services import SERVICES, Services
from robert_server.codes import sources

log = logging.getLogger("robert.api")

MAX_TOKEN = 2048  # a JWT code is a few hundred characters


async def report(svc: Services, code: str, items: Sequence[contacts.Contact], source: str) -> dict[str, Any]:
    reservation = await svc.verifier.reserve(code, source)
    if reservation is None:
        log.info("report refused: invalid code")
        raise ApiError(401, "invalid token")
    try:
        await contacts.store_report(svc.db, reservation.report_id, items, svc.time.clock.utcnow())
    except BaseException:
        await svc.verifier.release(reservation)
        raise
    if not await svc.verifier.confirm(reservation):
        # The reservation lapsed and another upload of the same code took it: that upload stores
        # under the same report id, so these contacts are not stored twice. Still a success.
        log.info("report confirmed by a concurrent upload of the same code")
    await kpis.increment(svc.db, svc.time.clock.utcnow().date(), reports=1)
    log.info(
        "report stored",
        extra={"contacts": len(items), "hellos": sum(len(c.hellos) for c in items), "kind": reservation.kind},
    )
    return {
        "success": True,
        "message": "Successful operation",
        "reportValidationToken": svc.tokens.report_validation_token(svc.time.clock.now()),
    }


async def handle(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    body = await v.read_json(request, svc.settings.report_max_body_bytes)
    items = v.contacts(body)  # null contacts: 400 before the code is looked at, as deployed
    code = v.string(body, "token", max_len=MAX_TOKEN)
    assert code is not None
    trusted = sources.trusted_networks(tuple(svc.settings.trusted_proxies))
    source = sources.source_of(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
    result = await report(svc, code, items, source)
    padded = padding.report_shape(svc.tokens).dumps(result)  # constant length (see padding.py)
    return web.Response(body=padded, content_type="application/json")
