"""``POST /api/v6/status`` (PROTOCOL.md 5 and 6): exposure status and a fresh bundle.

Polls are gathered in micro-batches (robert_server/api/batching.py): one crypto call and one database
round trip each way serve every poll of a batch (:func:`status_many`). The batcher is this endpoint's own
resource: :func:`setup` opens it in the app's ``cleanup_ctx`` (after the services) and closes it before
them; a handler reaches it with ``request.app[STATUS_BATCHER]``.

A poll whose answer does not reach the phone leaves no trace that would refuse its next poll as too
soon: a batch skips the polls already past their request deadline, and an accept whose answer is then
lost (deadline over, connection gone) is undone (:func:`registrations.undo_status`, conditional on that
accept still being the last one). The phone retries and is answered as if the lost poll never happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import pybase64
from aiohttp import web

from robert_common.clock import ServiceTime
from robert_server import kpis, registrations
from robert_server.api import padding
from robert_server.api import validation as v
from robert_server.api.auth import Authenticated, check_drift, crypto_failure
from robert_server.api.batching import MicroBatcher
from robert_server.api.delivery import deliver
from robert_server.api.errors import DEADLINE, ApiError, bad_request, unavailable
from robert_server.api.services import SERVICES, Services
from robert_server.api.validation import AuthFields
from robert_server.crypto_client import AuthRequest, Bundle, CryptoError, RequestType
from robert_server.tokens import TokenSigner

log = logging.getLogger("robert.api")

RISK_HIGH = 4
RISK_NONE = 0


@dataclass(frozen=True, slots=True)
class Poll:
    """One /status request waiting for its micro-batch."""

    fields: AuthFields
    push_info: dict[str, str] | None
    deadline: float = float("inf")  # loop time after which nobody waits for the answer


@dataclass(frozen=True, slots=True)
class Accepted:
    """A poll that passed: what its answer is made of."""

    id_a: bytes
    sealed_tuples: bytes
    reg: dict[str, Any]
    epoch_id: int
    write: registrations.StatusPoll  # what accepted it (to undo it if the answer is lost)


StatusBatcher = MicroBatcher[Poll, Accepted]
STATUS_BATCHER: web.AppKey[StatusBatcher] = web.AppKey("status_batcher")


def setup(app: web.Application) -> None:
    """Give the app the /status micro-batcher; call it after the cleanup context that sets SERVICES."""
    app.cleanup_ctx.append(_batcher)


async def _batcher(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]

    async def batch(polls: list[Poll]) -> list[Accepted | ApiError]:
        return await status_many(svc, polls)

    async def lost(poll: Poll, accepted: Accepted) -> None:
        await undo(svc, accepted)

    settings = svc.settings
    batcher = app[STATUS_BATCHER] = StatusBatcher(
        batch, settings.status_batch_max, settings.status_batch_delay_ms / 1000, lost=lost
    )
    try:
        yield
    finally:
        await batcher.close()  # the polls waiting are answered before the services close


async def status(svc: Services, batcher: StatusBatcher, poll: Poll) -> tuple[Accepted, dict[str, Any]]:
    """Authenticate with a bundle, apply the minimum gap between polls, answer the risk (unpadded:
    :func:`handle` sends it with :func:`padding.status_shape`). The caller delivers the answer, or
    hands the poll back (``batcher.give_back``) when it cannot."""
    polled = await batcher.submit(poll)
    at_risk = bool(polled.reg.get("at_risk"))
    try:
        config = await svc.config.get()
        result = answer(
            svc.time,
            svc.tokens,
            config,
            polled.reg,
            polled.id_a,
            polled.sealed_tuples,
            at_risk,
            polled.epoch_id,
        )
    except BaseException:
        batcher.give_back(poll, polled)
        raise
    return polled, result


async def undo(svc: Services, accepted: Accepted) -> None:
    """The answer of an accepted poll was lost: take the accept back (see registrations.undo_status)."""
    if await registrations.undo_status(svc.db, accepted.write):
        log.info("status answer not delivered: poll undone")
        if accepted.write.notify:
            await kpis.increment(svc.db, svc.time.clock.utcnow().date(), notifiedUsers=-1)


async def status_many(svc: Services, polls: list[Poll]) -> list[Accepted | ApiError]:
    """:func:`status` for a micro-batch of polls: one crypto call (PROTOCOL.md 5, with the bundles), one
    registration read, one conditional bulk write (the minimum gap, PROTOCOL.md 6). Refusals are rare
    and written one by one. One result per poll: what to answer, or the error to answer instead."""
    epoch_id = svc.time.current_epoch()
    out: list[Accepted | ApiError | None] = [None] * len(polls)
    _skip_late(polls, range(len(polls)), out)
    auths = await _authenticate_many(svc, polls, epoch_id, out)
    writes = await _apply_gap(svc, polls, auths, epoch_id, out)
    for k in _skip_late(polls, list(writes), out):  # nobody waits for these answers: write nothing
        del writes[k]
    accepted = await registrations.accept_statuses(svc.db, [w for _, w in writes.values()])
    notified = 0
    for (k, (reg, write)), ok in zip(writes.items(), accepted, strict=True):
        if ok:
            out[k] = Accepted(write.id_a, auths[k].sealed_tuples, reg, epoch_id, write)
            notified += write.notify
        else:  # another poll of this phone was accepted meanwhile
            out[k] = await _too_soon(svc, auths[k], epoch_id)
    if notified:
        await kpis.increment(svc.db, svc.time.clock.utcnow().date(), notifiedUsers=notified)
    done = [r for r in out if r is not None]
    assert len(done) == len(polls), "every poll has an outcome"
    return done


def _skip_late(polls: list[Poll], indexes: Iterable[int], out: list[Accepted | ApiError | None]) -> list[int]:
    """The polls (of ``indexes``) already past their deadline, marked 503 in ``out``."""
    now = asyncio.get_running_loop().time()
    late = [k for k in indexes if polls[k].deadline <= now and out[k] is None]
    for k in late:
        out[k] = unavailable()
    return late


async def _authenticate_many(
    svc: Services, polls: list[Poll], epoch_id: int, out: list[Accepted | ApiError | None]
) -> dict[int, Authenticated]:
    """The polls that authenticate (by index); the error of each other one goes in ``out``."""
    bundle = Bundle(epoch_id, svc.settings.bundle_days, svc.settings.country_code)
    todo = [k for k in range(len(polls)) if out[k] is None]
    if not todo:
        return {}
    fields = [polls[k].fields for k in todo]
    requests = [AuthRequest(f.ebid, f.epoch_id, f.time, f.mac, RequestType.STATUS, bundle) for f in fields]
    try:
        results = await svc.crypto.authenticate_many(requests)
    except CryptoError as e:
        raise crypto_failure(e) from None  # every poll of the batch
    auths = {}
    for k, result in zip(todo, results, strict=True):
        poll = polls[k]
        try:
            if isinstance(result, CryptoError):
                raise crypto_failure(result)
            auths[k] = await check_drift(svc, poll.fields, result)
        except ApiError as e:
            out[k] = e
    return auths


async def _apply_gap(
    svc: Services,
    polls: list[Poll],
    auths: dict[int, Authenticated],
    epoch_id: int,
    out: list[Accepted | ApiError | None],
) -> dict[int, tuple[dict[str, Any], registrations.StatusPoll]]:
    """Read the registrations; the polls far enough from the previous accepted one, with the write that
    accepts each (a compare-and-set on ``last_status_epoch``); the others' errors go in ``out``."""
    regs = await registrations.get_many_for_status(svc.db, [a.id_a for a in auths.values()])
    gap = svc.settings.status_min_epoch_gap
    writes = {}
    for (k, auth), reg in zip(auths.items(), regs, strict=True):
        if reg is None:
            out[k] = ApiError(404, "unknown registration")
            continue
        previous = reg.get("last_status_epoch")
        if gap and previous is not None and epoch_id - previous < gap:
            out[k] = await _too_soon(svc, auth, epoch_id)
            continue
        notify = bool(reg.get("at_risk")) and not reg.get("notified")
        push_info = polls[k].push_info
        writes[k] = (
            reg,
            registrations.StatusPoll(auth.id_a, previous, epoch_id, auth.drift, push_info, notify),
        )
    return writes


async def _too_soon(svc: Services, auth: Authenticated, epoch_id: int) -> ApiError:
    await registrations.record_refused_status(svc.db, auth.id_a, epoch_id, auth.drift)
    return bad_request("status requested too soon")


def _risk_scoring_ntp(time: ServiceTime, reg: dict[str, Any]) -> int | None:
    if reg.get("last_risk_scoring_ntp"):
        return int(reg["last_risk_scoring_ntp"])
    if reg.get("latest_risk_epoch"):
        return time.epoch_start(int(reg["latest_risk_epoch"]))
    return None


def answer(
    time: ServiceTime,
    tokens: TokenSigner,
    config: list[dict[str, Any]],
    reg: dict[str, Any],
    id_a: bytes,
    sealed: bytes,
    at_risk: bool,
    epoch_id: int,
) -> dict[str, Any]:
    """The answer to an accepted poll (PROTOCOL.md 6), before padding."""
    now = time.clock.now()
    out: dict[str, Any] = {
        "riskLevel": RISK_HIGH if at_risk else RISK_NONE,
        "tuples": pybase64.b64encode_as_string(sealed),  # SIMD: 1 us, not 19, for the 23 KB bundle
        "config": config,
    }
    if at_risk:
        last_contact = reg.get("last_contact_ntp")
        scoring = _risk_scoring_ntp(time, reg)
        if last_contact:
            out["lastContactDate"] = str(int(last_contact))
        if scoring:
            out["lastRiskScoringDate"] = str(scoring)
        if last_contact:
            # Same exposure, same jti: the declaration service can refuse a second declaration.
            jti = tokens.declaration_jti(id_a, int(reg.get("latest_risk_epoch") or 0))
            out["declarationToken"] = tokens.declaration_token(
                now,
                last_contact_ntp=int(last_contact),
                notification_ntp=time.epoch_start(epoch_id),
                jti=jti,
            )
    out["analyticsToken"] = tokens.analytics_token(now)
    return out


async def handle(request: web.Request) -> web.Response:
    body = await v.read_json(request, v.SMALL_BODY)
    poll = Poll(v.auth_fields(body), v.push_info(body), request.get(DEADLINE, float("inf")))
    svc = request.app[SERVICES]
    batcher = request.app[STATUS_BATCHER]
    polled, result = await status(svc, batcher, poll)
    padded = padding.status_shape(svc.tokens).dumps(result)  # the same length at risk or not
    response = web.Response(body=padded, content_type="application/json")
    delivered = False
    try:
        delivered = await deliver(request, response)
    finally:
        if not delivered:
            batcher.give_back(poll, polled)
    return response
