"""The simulator's links to the system besides the phone API: codes, matching, the server's public key.

- Codes: the code-issuer gRPC service (proto/codes.proto), as a doctor's ProStopCovid would use it:
  one short code per diagnosed phone, with the issuer's bearer token.
- Matching: run ``robert matcher --once`` (or any command) and wait for it, or just wait for the
  periodic worker of ``robert up``.
- The registration public key apps embed: from a file (PEM, DER or base64 DER) or from the crypto
  service's ``GetRegistrationPublicKey``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization

from robert_common.rpc import codes_pb2, codes_pb2_grpc, crypto_pb2, crypto_pb2_grpc


class BackendError(RuntimeError):
    """The system could not do what the simulation needs; the message says what and where."""


class GrpcIssuer:
    """Short codes from the CodeIssuer service at ``address`` (PROTOCOL.md 7)."""

    def __init__(
        self,
        address: str,
        token: str,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``credentials``: the issuer's certificate on a mutual-TLS code issuer (None: plaintext)."""
        self.address = address
        self._credentials = credentials
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    async def get_code(self) -> str:
        if self._channel is None:
            self._channel = _channel(self.address, self._credentials, "codes")
        stub = codes_pb2_grpc.CodeIssuerStub(self._channel)
        try:
            issued = await stub.IssueShortCode(
                codes_pb2.IssueShortCodeRequest(), metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            raise BackendError(f"code issuer at {self.address}: {e.code().name}") from None
        return str(issued.code)

    async def long_codes(self, count: int) -> list[str]:
        """A lot of ``count`` long codes valid from today (load tests need many single-use codes)."""
        async with _channel(self.address, self._credentials, "codes") as channel:
            stub = codes_pb2_grpc.CodeIssuerStub(channel)
            request = codes_pb2.IssueLongCodesRequest(count=count)
            try:
                return [c.code async for c in stub.IssueLongCodes(request, metadata=self._metadata)]
            except grpc.aio.AioRpcError as e:
                raise BackendError(f"code issuer at {self.address}: {e.code().name}") from None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def matcher_command(command: str, timeout: float = 600.0) -> Callable[[], Awaitable[None]]:
    """Runs ``command`` (e.g. ``robert matcher --once``) to completion for each matching step."""
    argv = shlex.split(command)

    async def run() -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BackendError(f"matcher command did not finish in {timeout:.0f} s: {command}") from None
        if proc.returncode != 0:
            last = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise BackendError(f"matcher command exited with {proc.returncode}: {command}: {last[0][:200]}")

    return run


def matcher_wait(seconds: float) -> Callable[[], Awaitable[None]]:
    """For a system whose own worker runs periodically (``robert up``): wait one of its periods."""

    async def run() -> None:
        await asyncio.sleep(seconds)

    return run


def load_server_key(path: Path) -> bytes:
    """The registration public key (SPKI DER) from a PEM, DER or base64-DER file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BackendError(f"{path}: cannot read: {e.strerror}") from None
    candidates = [data]
    try:
        candidates.append(base64.b64decode(data.strip(), validate=True))
    except (binascii.Error, ValueError):
        pass
    for blob in candidates:
        for loader in (serialization.load_pem_public_key, serialization.load_der_public_key):
            try:
                key = loader(blob)
            except (ValueError, TypeError):
                continue
            return key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
    raise BackendError(f"{path}: not a public key (PEM, DER or base64 DER)")


def _channel(address: str, credentials: grpc.ChannelCredentials | None, service: str) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", service)])


async def fetch_server_key(
    crypto_address: str, deadline: float = 5.0, credentials: grpc.ChannelCredentials | None = None
) -> bytes:
    """The registration public key from the crypto service (what apps embed); ``credentials``: a
    certificate of the plane's CA when the crypto service runs mutual TLS."""
    async with _channel(crypto_address, credentials, "crypto") as channel:
        stub = crypto_pb2_grpc.CryptoServiceStub(channel)
        try:
            r = await stub.GetRegistrationPublicKey(
                crypto_pb2.GetRegistrationPublicKeyRequest(), timeout=deadline
            )
        except grpc.aio.AioRpcError as e:
            raise BackendError(f"crypto service at {crypto_address}: {e.code().name}") from None
    return bytes(r.public_key)
