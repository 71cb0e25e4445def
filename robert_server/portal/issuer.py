"""The portal's client of the code issuer (proto/codes.proto), with its own bearer token.

A code is shown only when IssueShortCode answered: the issuer stores a code before it returns it, so
a code that reaches the page is a stored code. Any failure (unreachable, deadline, refusal) is an
IssuerUnavailable and nothing is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from robert_common.rpc import codes_pb2, codes_pb2_grpc

CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# With TLS the issuer's certificate must name the service ("codes"), whatever the address (robert_common.tls)
TLS_OPTIONS = (*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", "codes"))


class IssuerUnavailable(Exception):
    """The code issuer could not give a code; the message names the gRPC status only."""


@dataclass(frozen=True)
class ShortCode:
    code: str
    valid_until: int  # Unix seconds, exclusive
    qr_payload: str


class IssuerClient:
    def __init__(
        self, address: str, token: str, timeout: float, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.address = address
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        # Short reconnect backoff: after an outage the user's "retry" should find the channel back.
        self._channel = (
            grpc.aio.secure_channel(address, credentials, options=TLS_OPTIONS)
            if credentials is not None
            else grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        )
        self._stub = codes_pb2_grpc.CodeIssuerStub(self._channel)

    async def issue_short(self) -> ShortCode:
        try:
            r = await self._stub.IssueShortCode(
                codes_pb2.IssueShortCodeRequest(),
                metadata=self._metadata,
                timeout=self._timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as e:
            raise IssuerUnavailable(e.code().name) from None
        return ShortCode(r.code, int(r.valid_until), r.qr_payload)

    async def revoke(self, code: str) -> bool:
        try:
            r = await self._stub.RevokeCode(
                codes_pb2.RevokeCodeRequest(code=code), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(r.revoked)

    async def close(self) -> None:
        await self._channel.close()
