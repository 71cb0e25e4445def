"""``POST /api/v6/unregister`` (salt 0x03) and ``POST /api/v6/deleteExposureHistory`` (salt 0x04)."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from robert_server import registrations
from robert_server.api import validation as v
from robert_server.api.auth import authenticate, crypto_failure
from robert_server.api.errors import ApiError, bad_request
from robert_server.api.services import SERVICES, Services
from robert_server.api.validation import AuthFields
from robert_server.crypto_client import CryptoError, RequestType

log = logging.getLogger("robert.api")

# The same bytes for every phone (constant length whatever its risk: see padding.py): nothing to pad.
SUCCESS = orjson.dumps({"success": True})


async def unregister(svc: Services, fields: AuthFields) -> None:
    """Only once authenticated: forget the phone's keys, then its registration (and push info)."""
    auth = await authenticate(svc, fields, RequestType.UNREGISTER)
    await _claim(svc, auth.id_a, "unregister", fields)
    try:
        await svc.crypto.delete_identity(auth.id_a)
    except CryptoError as e:
        raise crypto_failure(e) from None
    await registrations.delete(svc.db, auth.id_a)


async def delete_exposure_history(svc: Services, fields: AuthFields) -> None:
    """Empty the registration's exposures (PROTOCOL.md 6)."""
    auth = await authenticate(svc, fields, RequestType.DELETE_EXPOSURE_HISTORY)
    await _claim(svc, auth.id_a, "delete_history", fields)
    if not await registrations.clear_exposures(svc.db, auth.id_a):
        raise ApiError(404, "unknown registration")
    await registrations.record_drift(svc.db, auth.id_a, auth.drift)


async def _claim(svc: Services, id_a: bytes, kind: str, fields: AuthFields) -> None:
    """404 for an unknown registration, 400 for a request time already used (a replay)."""
    if not await registrations.claim_request_time(svc.db, id_a, kind, fields.ntp_time):
        if await registrations.get(svc.db, id_a) is None:
            raise ApiError(404, "unknown registration")
        log.info("request time already used", extra={"kind": kind})
        raise bad_request("request time already used")


async def handle_unregister(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    body = await v.read_json(request, v.SMALL_BODY)
    fields = v.auth_fields(body)
    v.string(body, "pushToken", required=False)  # the push service forgets it with the registration
    await unregister(svc, fields)
    return web.Response(body=SUCCESS, content_type="application/json")


async def handle_delete_history(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    body = await v.read_json(request, v.SMALL_BODY)
    await delete_exposure_history(svc, v.auth_fields(body))
    return web.Response(body=SUCCESS, content_type="application/json")
