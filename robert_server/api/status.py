"""``POST /api/v6/status`` (PROTOCOL.md 5 and 6): exposure status and a fresh bundle."""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

import orjson
from aiohttp import web

from robert_server import kpis, registrations
from robert_server.api import validation as v
from robert_server.api.errors import ApiError, bad_request
from robert_server.api.services import SERVICES, STATUS, Services, authenticate
from robert_server.api.validation import AuthFields

log = logging.getLogger("robert.api")

RISK_HIGH = 4
RISK_NONE = 0


async def status(svc: Services, fields: AuthFields, push_info: dict[str, str] | None) -> dict[str, Any]:
    """Authenticate with a bundle, apply the minimum gap between polls, answer the risk."""
    auth = await authenticate(svc, fields, STATUS, with_bundle=True)
    epoch_id = svc.time.current_epoch()
    reg = await registrations.get_for_status(svc.db, auth.id_a)
    if reg is None:
        raise ApiError(404, "unknown registration")
    previous = reg.get("last_status_epoch")
    gap = svc.settings.status_min_epoch_gap
    if gap and previous is not None and epoch_id - previous < gap:
        await registrations.record_refused_status(svc.db, auth.id_a, epoch_id, auth.drift)
        raise bad_request("status requested too soon")
    at_risk = bool(reg.get("at_risk"))
    notify = at_risk and not reg.get("notified")
    accepted = await registrations.accept_status(
        svc.db, auth.id_a, previous, epoch_id, auth.drift, push_info=push_info, notify=notify
    )
    if not accepted:  # another poll of this phone was accepted meanwhile
        await registrations.record_refused_status(svc.db, auth.id_a, epoch_id, auth.drift)
        raise bad_request("status requested too soon")
    if notify:
        await kpis.increment(svc.db, svc.time.clock.utcnow().date(), notifiedUsers=1)
    return await _answer(svc, reg, auth.id_a, auth.sealed_tuples, at_risk, epoch_id)


def _risk_scoring_ntp(svc: Services, reg: dict[str, Any]) -> int | None:
    if reg.get("last_risk_scoring_ntp"):
        return int(reg["last_risk_scoring_ntp"])
    if reg.get("latest_risk_epoch"):
        return svc.time.epoch_start(int(reg["latest_risk_epoch"]))
    return None


async def _answer(
    svc: Services, reg: dict[str, Any], id_a: bytes, sealed: bytes, at_risk: bool, epoch_id: int
) -> dict[str, Any]:
    now = svc.time.clock.now()
    out: dict[str, Any] = {
        "riskLevel": RISK_HIGH if at_risk else RISK_NONE,
        "tuples": base64.b64encode(sealed).decode(),
        "config": await svc.config.get(),
    }
    if at_risk:
        last_contact = reg.get("last_contact_ntp")
        scoring = _risk_scoring_ntp(svc, reg)
        if last_contact:
            out["lastContactDate"] = str(int(last_contact))
        if scoring:
            out["lastRiskScoringDate"] = str(scoring)
        if last_contact:
            # Same exposure, same jti: the declaration service can refuse a second declaration.
            jti = hashlib.sha256(id_a + str(reg.get("latest_risk_epoch", 0)).encode()).hexdigest()[:32]
            out["declarationToken"] = svc.tokens.declaration_token(
                now,
                last_contact_ntp=int(last_contact),
                notification_ntp=svc.time.epoch_start(epoch_id),
                jti=jti,
            )
    out["analyticsToken"] = svc.tokens.analytics_token(now)
    return out


async def handle(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    body = await v.read_json(request, v.SMALL_BODY)
    result = await status(svc, v.auth_fields(body), v.push_info(body))
    return web.Response(body=orjson.dumps(result), content_type="application/json")
