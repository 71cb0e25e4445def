"""Authenticated requests (PROTOCOL.md 5), the steps /status, /unregister and /deleteExposureHistory share.

:func:`authenticate` checks one request: one crypto call (EBID, id_A, MAC), then the time drift.
/status checks a micro-batch of polls in one crypto call (robert_server/api/status.py) and then each
poll's drift with :func:`check_drift`. :func:`crypto_failure` is the one place where a crypto service
error becomes the status the phone gets (:data:`REASON_STATUS`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from robert_server import registrations
from robert_server.api.errors import ApiError, bad_request, unavailable
from robert_server.api.services import Services
from robert_server.api.validation import AuthFields
from robert_server.crypto_client import MALFORMED_ANSWER, Authentication, CryptoError, RequestType

log = logging.getLogger("robert.api")

# Crypto service reasons -> HTTP status. Following the deployed server: an identity it cannot find and a
# day without key both answer 430; a bad MAC, an epoch mismatch or a bad argument answer 400 (as does a
# reason not listed here).
REASON_STATUS = {
    "UNKNOWN_IDENTITY": 430,
    "NO_KEY_FOR_DAY": 430,
    "INVALID_MAC": 400,
    "EPOCH_MISMATCH": 400,
    "BAD_ARGUMENT": 400,
}


def crypto_failure(e: CryptoError) -> ApiError:
    """Map a crypto service error to the answer the phone gets (no detail of why): 503 when the service
    is down or too slow, 500 when its answer broke the contract (a fault of ours, not of the request),
    else the status of its reason."""
    if e.unavailable:
        log.warning("crypto service unavailable")
        return unavailable()
    if e.reason == MALFORMED_ANSWER:
        log.error("malformed answer from the crypto service", extra={"error": e.message})
        return ApiError(500, "internal error")
    status = REASON_STATUS.get(e.reason or "", 400)
    log.info("authentication refused", extra={"reason": e.reason})
    return ApiError(status, "authentication failed" if status == 400 else "unknown identity or epoch key")


@dataclass(frozen=True, slots=True)
class Authenticated:
    id_a: bytes
    epoch_id: int
    drift: int  # phone time minus server time, seconds
    sealed_tuples: bytes  # empty unless a bundle was asked for


async def authenticate(svc: Services, fields: AuthFields, request_type: RequestType) -> Authenticated:
    """PROTOCOL.md 5: one crypto call (EBID, id_A, MAC; the salt is ``request_type``), then the time
    drift, recorded even when refused."""
    try:
        result = await svc.crypto.authenticate(
            fields.ebid, fields.epoch_id, fields.time, fields.mac, request_type
        )
    except CryptoError as e:
        raise crypto_failure(e) from None
    return await check_drift(svc, fields, result)


async def check_drift(svc: Services, fields: AuthFields, result: Authentication) -> Authenticated:
    """PROTOCOL.md 5: the request's time within the tolerance; the drift is recorded even when refused."""
    drift = fields.ntp_time - svc.time.ntp_now()
    if abs(drift) > svc.settings.request_time_tolerance:
        await registrations.record_drift(svc.db, result.id_a, drift)
        log.info("request time too far from server time", extra={"drift": drift})
        raise bad_request("request time too far from server time")
    return Authenticated(result.id_a, result.epoch_id, drift, result.sealed_tuples or b"")
