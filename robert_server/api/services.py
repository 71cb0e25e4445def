"""What every phone API handler is given: the injected services, and the shared steps of the protocol.

:class:`Services` holds the settings, the protocol time, the database, the crypto client, the code
verifier, the JWT signer, the captcha service and the client config cache: built once by
``create_app`` and reached from a handler with ``request.app[SERVICES]``.

:func:`authenticate` is PROTOCOL.md section 5 for /unregister and /deleteExposureHistory; /status does
the same for a micro-batch of polls (robert_server/api/status.py, through ``status_batcher``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ServiceTime
from robert_common.settings import Settings
from robert_server import registrations
from robert_server.api.batching import MicroBatcher
from robert_server.api.errors import ApiError, bad_request, unavailable
from robert_server.api.validation import AuthFields
from robert_server.client_config import ConfigCache
from robert_server.codes.verifier import CodeVerifier
from robert_server.crypto_client import Authentication, CryptoClient, CryptoError, RequestType
from robert_server.tokens import TokenSigner

if TYPE_CHECKING:
    from robert_server.api.status import Accepted, Poll
    from robert_server.captcha import CaptchaService

log = logging.getLogger("robert.api")

# The salt of each authenticated request (PROTOCOL.md 5) is the RequestType value.
STATUS = RequestType.STATUS
UNREGISTER = RequestType.UNREGISTER
DELETE_EXPOSURE_HISTORY = RequestType.DELETE_EXPOSURE_HISTORY

# Crypto service reasons -> HTTP status. Following the deployed server: an identity it cannot find and a
# day without key both answer 430; a bad MAC, an epoch mismatch or a bad argument answer 400.
_REASON_STATUS = {
    "UNKNOWN_IDENTITY": 430,
    "NO_KEY_FOR_DAY": 430,
    "INVALID_MAC": 400,
    "EPOCH_MISMATCH": 400,
    "BAD_ARGUMENT": 400,
}


@dataclass
class Services:
    settings: Settings
    time: ServiceTime
    db: AsyncDatabase
    crypto: CryptoClient
    verifier: CodeVerifier
    tokens: TokenSigner
    captcha: CaptchaService
    config: ConfigCache
    # /status polls gathered into one crypto call and one database round trip each way (status_many)
    status_batcher: MicroBatcher[Poll, Accepted]


SERVICES = web.AppKey("services", Services)


def crypto_failure(e: CryptoError) -> ApiError:
    """Map a crypto service error to the answer the phone gets (no detail of why)."""
    if e.unavailable:
        log.warning("crypto service unavailable")
        return unavailable()
    status = _REASON_STATUS.get(e.reason or "", 400)
    log.info("authentication refused", extra={"reason": e.reason})
    return ApiError(status, "authentication failed" if status == 400 else "unknown identity or epoch key")


@dataclass(frozen=True, slots=True)
class Authenticated:
    id_a: bytes
    epoch_id: int
    drift: int  # phone time minus server time, seconds
    sealed_tuples: bytes  # empty unless a bundle was asked for


async def authenticate(svc: Services, fields: AuthFields, request_type: RequestType) -> Authenticated:
    """PROTOCOL.md 5: one crypto call (EBID, id_A, MAC), then the time drift, recorded even when refused."""
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
