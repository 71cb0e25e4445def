"""Mutual TLS on the CodeIssuer service: only certificates of the plane's CA named ``issuer-...`` may call
it, and the bearer token still says which issuer (against the real ``code_issuer`` fixture's server)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock
from robert_common.rpc import codes_pb2 as pb
from robert_common.rpc import codes_pb2_grpc
from robert_common.settings import SettingsError, load_settings
from robert_server.codes.server import start_server
from tests.fixtures.codes import CodeIssuerHandle, codes_settings_overrides


def _channel(address: str, pki: Path, name: str | None, ca_dir: Path | None = None) -> grpc.aio.Channel:
    ca_dir = ca_dir or pki
    key = (ca_dir / f"{name}.key").read_bytes() if name else None
    cert = (ca_dir / f"{name}.pem").read_bytes() if name else None
    creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(), key, cert)
    return grpc.aio.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "codes")])


async def _issue(channel: grpc.aio.Channel, auth: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        await codes_pb2_grpc.CodeIssuerStub(channel).IssueShortCode(
            pb.IssueShortCodeRequest(), metadata=auth, timeout=5
        )
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def test_only_issuer_certificates_may_call(code_issuer: CodeIssuerHandle, test_pki: Path) -> None:
    auth = code_issuer.auth()
    assert await _issue(code_issuer.channel, auth) == grpc.StatusCode.OK  # certificate issuer-test
    # the certificate admits an issuer; its token still has to say which one
    assert await _issue(code_issuer.channel, code_issuer.auth("wrong")) == grpc.StatusCode.UNAUTHENTICATED
    for name in ("api", "matcher", "seed", "crypto"):
        async with _channel(code_issuer.address, test_pki, name) as channel:
            assert await _issue(channel, auth) == grpc.StatusCode.PERMISSION_DENIED, name
    async with _channel(code_issuer.address, test_pki, "portal") as channel:  # short codes, revocation
        assert await _issue(channel, auth) == grpc.StatusCode.OK
        stub = codes_pb2_grpc.CodeIssuerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            request = pb.IssueLongCodesRequest(count=1)
            await anext(aiter(stub.IssueLongCodes(request, metadata=auth, timeout=5)))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    strangers = [
        _channel(code_issuer.address, test_pki, None),
        _channel(code_issuer.address, test_pki, "expired"),
        _channel(code_issuer.address, test_pki, "api", ca_dir=test_pki / "other-ca"),
        grpc.aio.insecure_channel(code_issuer.address),
    ]
    for channel in strangers:
        async with channel:
            assert await _issue(channel, auth) == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_only_on_loopback(
    db: AsyncDatabase, tmp_path: Path, codes_clock: ManualClock
) -> None:
    settings = load_settings(data_dir=tmp_path, grpc_plaintext=True, **codes_settings_overrides())
    with pytest.raises(SettingsError, match="loopback"):
        await start_server(db, settings, codes_clock, listen="0.0.0.0:0")
    server, port, _ = await start_server(db, settings, codes_clock, listen="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            # plaintext reaches the service (the token is checked: no certificate, no rights)
            assert await _issue(channel, (("authorization", "Bearer x"),)) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(None)


async def test_missing_certificates_stop_start_up(
    db: AsyncDatabase, tmp_path: Path, codes_clock: ManualClock
) -> None:
    settings = load_settings(data_dir=tmp_path, **codes_settings_overrides())
    with pytest.raises(SettingsError, match="robert certs init"):
        await start_server(db, settings, codes_clock, listen="127.0.0.1:0")
