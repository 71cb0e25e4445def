"""Mutual TLS on the CodeIssuer service (optional): with a client CA set, a client needs a certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock
from robert_common.rpc import codes_pb2 as pb
from robert_common.rpc import codes_pb2_grpc
from robert_common.settings import SettingsError, load_settings
from robert_server.codes import issuers
from robert_server.codes.server import start_server
from tests.fixtures.codes import codes_settings_overrides

Pair = tuple[bytes, bytes]  # (certificate PEM, key PEM)


def _cert(
    name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool
) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def test_mutual_tls_requires_a_client_certificate(
    db: AsyncDatabase, tmp_path: Path, codes_clock: ManualClock
) -> None:
    ca = _cert("test CA", None, ca=True)
    server_cert, server_key = _pem(*_cert("code issuer", ca, ca=False))
    client_cert, client_key = _pem(*_cert("prostopcovid", ca, ca=False))
    ca_pem = _pem(*ca)[0]
    (tmp_path / "server.pem").write_bytes(server_cert)
    (tmp_path / "server.key").write_bytes(server_key)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    settings = load_settings(
        data_dir=tmp_path,
        codes_tls_cert=tmp_path / "server.pem",
        codes_tls_key=tmp_path / "server.key",
        codes_tls_client_ca=tmp_path / "ca.pem",
        **codes_settings_overrides(),
    )
    server, port, service = await start_server(db, settings, codes_clock, listen="127.0.0.1:0")
    try:
        token = await issuers.add(db, "lab", service.now())
        auth = (("authorization", f"Bearer {token}"),)
        good = grpc.ssl_channel_credentials(ca_pem, client_key, client_cert)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", good) as channel:
            issued = await codes_pb2_grpc.CodeIssuerStub(channel).IssueShortCode(
                pb.IssueShortCodeRequest(), metadata=auth
            )
            assert issued.code
        no_client_cert = grpc.ssl_channel_credentials(ca_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", no_client_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await codes_pb2_grpc.CodeIssuerStub(channel).IssueShortCode(
                    pb.IssueShortCodeRequest(), metadata=auth, timeout=5
                )
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await codes_pb2_grpc.CodeIssuerStub(channel).IssueShortCode(
                    pb.IssueShortCodeRequest(), metadata=auth, timeout=5
                )
    finally:
        await server.stop(None)


async def test_tls_settings_must_be_complete(
    db: AsyncDatabase, tmp_path: Path, codes_clock: ManualClock
) -> None:
    settings = load_settings(
        data_dir=tmp_path, codes_tls_cert=tmp_path / "missing.pem", **codes_settings_overrides()
    )
    with pytest.raises(SettingsError):
        await start_server(db, settings, codes_clock, listen="127.0.0.1:0")
