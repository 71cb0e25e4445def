"""``POST /api/v6/register`` (PROTOCOL.md 6): captcha, then the crypto service, then the registration.

A registration whose answer does not reach the phone (deadline over, phone gone) is forgotten again,
identity and all: the phone, told nothing, registers anew (robert_server/api/delivery.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import orjson
from aiohttp import web

from robert_server import registrations
from robert_server.api import validation as v
from robert_server.api.auth import crypto_failure
from robert_server.api.delivery import deliver, in_background
from robert_server.api.errors import ApiError, unavailable
from robert_server.api.services import SERVICES, Services
from robert_server.crypto_client import CryptoError

log = logging.getLogger("robert.api")

MAX_PUBLIC_KEY_B64 = 256  # a P-256 SPKI is 91 bytes, 124 base64 characters


async def register(
    svc: Services, captcha_id: str, answer: str, client_public_key: bytes, push_info: dict[str, str] | None
) -> tuple[bytes, dict[str, Any]]:
    """Check the captcha, create the identity and its first bundle, store the registration: its id_A
    and the answer."""
    if not await svc.captcha.verify(captcha_id, answer):
        raise ApiError(401, "invalid captcha")
    epoch_id = svc.time.current_epoch()
    try:
        created = await svc.crypto.create_registration(
            client_public_key, epoch_id, svc.settings.bundle_days, svc.settings.country_code
        )
    except CryptoError as e:
        if e.unavailable:
            raise unavailable() from None
        if e.reason == "BAD_ARGUMENT":
            raise ApiError(400, "invalid clientPublicECDHKey") from None
        raise crypto_failure(e) from None
    try:
        await registrations.create(svc.db, created.id_a, epoch_id, push_info)
    except BaseException:
        # Nothing half-written: without its registration the identity must not stay behind.
        await _forget_identity(svc, created.id_a)
        raise
    try:
        return created.id_a, {
            "tuples": base64.b64encode(created.sealed_tuples).decode(),
            "timeStart": svc.time.time_start,
            "config": await svc.config.get(),
        }
    except BaseException:
        await asyncio.shield(forget(svc, created.id_a))
        raise


async def forget(svc: Services, id_a: bytes) -> None:
    """Undo a registration the phone never heard of: its registration, then its identity."""
    await registrations.delete(svc.db, id_a)
    await _forget_identity(svc, id_a)
    log.info("register answer not delivered: registration undone")


FORGET_ATTEMPTS = 5
FORGET_FIRST_DELAY = 0.5  # seconds, doubled after each failed attempt (about 8 s in all)
_forgetting: set[asyncio.Task[None]] = set()


async def _forget_identity(svc: Services, id_a: bytes) -> None:
    """Delete the identity of a failed registration before answering, and if that first attempt fails,
    retry in a task of its own (doubling delays) that neither the request's answer nor its cancellation
    stops. Identities it still cannot delete are removed by the matcher's daily reconciliation
    (robert_server/matching/orphans.py)."""
    first_done = asyncio.Event()
    task = asyncio.create_task(_forget_with_retries(svc, id_a, first_done))
    _forgetting.add(task)
    task.add_done_callback(_forgetting.discard)
    await asyncio.shield(first_done.wait())


async def _forget_with_retries(svc: Services, id_a: bytes, first_done: asyncio.Event) -> None:
    delay = FORGET_FIRST_DELAY
    try:
        for attempt in range(1, FORGET_ATTEMPTS + 1):
            try:
                await svc.crypto.delete_identity(id_a)
                return
            except CryptoError:
                first_done.set()
                if attempt == FORGET_ATTEMPTS:
                    break
                await asyncio.sleep(delay)
                delay *= 2
        log.error("identity of a failed registration not deleted; left to the daily reconciliation")
    finally:
        first_done.set()


async def handle(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    body = await v.read_json(request, v.REGISTER_BODY)
    captcha_id = v.string(body, "captchaId", max_len=256)
    answer = v.string(body, "captcha", max_len=256)
    key = v.b64_bytes(body, "clientPublicECDHKey", max_len=MAX_PUBLIC_KEY_B64)
    push = v.push_info(body)
    assert captcha_id is not None and answer is not None
    id_a, result = await register(svc, captcha_id, answer, key, push)
    response = web.Response(status=201, body=orjson.dumps(result), content_type="application/json")
    delivered = False
    try:
        delivered = await deliver(request, response)
    finally:
        if not delivered:
            in_background(request, forget(svc, id_a), "register undo")
    return response
