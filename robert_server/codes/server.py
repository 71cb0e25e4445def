"""The CodeIssuer gRPC service (proto/codes.proto): issuers authenticate with a bearer token.

``start_server`` binds it with mutual TLS (robert_common.tls): only certificates named ``issuer-...``
may call it, and the bearer token still says which issuer; it returns the running server and its port.
``robert codes serve`` runs it with an hourly purge beside it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator

import grpc
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock
from robert_common.rpc import codes_pb2 as pb
from robert_common.rpc import codes_pb2_grpc as pb_grpc
from robert_common.settings import Settings, SettingsError
from robert_common.tls import MethodRights, secure_server

from . import counts, issuers, metrics
from .formats import JWT, LONG, SHORT
from .service import CodeService, CodeServiceError, IssuedCode

log = logging.getLogger(__name__)

KIND_TO_PB = {SHORT: pb.CODE_KIND_SHORT, LONG: pb.CODE_KIND_LONG, JWT: pb.CODE_KIND_JWT}
PURGE_INTERVAL = 3600.0
SERVICE = "robert.codes.v1.CodeIssuer"
RIGHTS = MethodRights(
    SERVICE,
    {
        "issuer-*": ("IssueShortCode", "IssueLongCodes", "RevokeCode", "GetDailyCounts"),
        "portal": ("IssueShortCode", "RevokeCode"),  # the ProStopCovid portal: a code per consultation
    },
)


def to_pb(code: IssuedCode) -> pb.IssuedCode:
    return pb.IssuedCode(
        code=code.code, kind=KIND_TO_PB[code.kind], valid_from=int(code.valid_from.timestamp()),
        valid_until=int(code.valid_until.timestamp()), qr_payload=code.qr_payload, lot_id=code.lot or "",
    )  # fmt: skip


def _parse_date(text: str, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CodeServiceError(f"{field} must be a date YYYY-MM-DD") from None


class CodeIssuerServicer(pb_grpc.CodeIssuerServicer):
    def __init__(self, service: CodeService) -> None:
        self.service = service

    async def _issuer(self, context: grpc.aio.ServicerContext) -> str:
        """The authenticated issuer's name; aborts with UNAUTHENTICATED otherwise."""
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                token = value.removeprefix("Bearer ").strip()
        name = await issuers.authenticate(self.service.db, token)
        if name is None:
            metrics.ISSUER_AUTH_FAILURES.inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked issuer token")
        return str(name)

    async def IssueShortCode(  # noqa: N802 - gRPC method name
        self, request: pb.IssueShortCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssuedCode:
        issuer = await self._issuer(context)
        try:
            return to_pb(await self.service.issue_short(issuer))
        except CodeServiceError as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
            raise

    async def IssueLongCodes(  # noqa: N802
        self, request: pb.IssueLongCodesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IssuedCode]:
        issuer = await self._issuer(context)
        try:
            day = _parse_date(request.valid_from_date, "valid_from_date") if request.valid_from_date else None
            lot = request.lot_id or None
            if lot is not None and not issuers.NAME_RE.fullmatch(lot):
                raise CodeServiceError("lot_id is 1 to 64 characters [A-Za-z0-9_.-]")
            async for batch in self.service.issue_long_lot(
                issuer, request.count, day or self.service.today(), lot
            ):
                for code in batch:
                    yield to_pb(code)
        except CodeServiceError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    async def RevokeCode(  # noqa: N802
        self, request: pb.RevokeCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeCodeResponse:
        issuer = await self._issuer(context)
        # Only the issuer's own codes, unless its token has the admin scope (``robert issuers add --admin``).
        only = None if await issuers.is_admin(self.service.db, issuer) else issuer
        return pb.RevokeCodeResponse(revoked=await self.service.revoke(request.code, only))

    async def GetDailyCounts(  # noqa: N802
        self, request: pb.GetDailyCountsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDailyCountsResponse:
        await self._issuer(context)
        try:
            since = _parse_date(request.from_date, "from_date")
            until = _parse_date(request.to_date, "to_date") if request.to_date else since
            rows = await counts.daily(self.service.db, since, until)
        except (CodeServiceError, ValueError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise
        return pb.GetDailyCountsResponse(
            counts=[pb.DailyCount(date=d.isoformat(), kind=KIND_TO_PB[k], **v) for d, k, v in rows]
        )


async def start_server(
    db: AsyncDatabase,
    settings: Settings,
    clock: Clock,
    listen: str | None = None,
    pepper: bytes | None = None,
) -> tuple[grpc.aio.Server, int, CodeService]:
    """Start the CodeIssuer service on ``listen`` (default settings.codes_listen); returns it and its port."""
    address = listen or settings.codes_listen
    try:
        server, port = secure_server(settings, "codes", address, RIGHTS)
    except OSError:
        raise SettingsError(f"cannot bind the code issuer to {address}") from None
    service = CodeService(db, settings, clock, pepper)
    await service.ensure_indexes()
    # No SO_REUSEPORT (secure_server): a second code issuer on the same port fails to start.
    pb_grpc.add_CodeIssuerServicer_to_server(CodeIssuerServicer(service), server)
    await server.start()
    log.info("code issuer listening", extra={"address": address, "port": port})
    return server, port, service


async def purge_forever(service: CodeService, interval: float = PURGE_INTERVAL) -> None:
    """Purge every ``interval`` seconds; one failed purge is logged and retried at the next turn."""
    while True:
        try:
            await service.purge()
        except Exception as e:  # noqa: BLE001 - keep serving; the type only (no values) goes to the log
            log.warning("codes purge failed", extra={"error": type(e).__name__})
        await asyncio.sleep(interval)
