"""The crypto service admits only certificates of the plane's CA, and each identity only to its methods.

Against the real gRPC server of the ``crypto_service`` fixture (mutual TLS with the session's test CA).
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from robert_common.rpc import crypto_pb2 as pb
from robert_common.rpc import crypto_pb2_grpc as pb_grpc
from robert_common.settings import SettingsError, load_settings
from simulator.phone import Phone
from tests.fixtures.crypto import CryptoService


def _channel(svc: CryptoService, pki: Path, name: str | None, ca_dir: Path | None = None) -> grpc.aio.Channel:
    """A channel presenting the certificate ``name`` of ``ca_dir`` (default: the test CA), or none."""
    ca_dir = ca_dir or pki
    key = (ca_dir / f"{name}.key").read_bytes() if name else None
    cert = (ca_dir / f"{name}.pem").read_bytes() if name else None
    creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(), key, cert)
    return grpc.aio.secure_channel(svc.address, creds, options=[("grpc.ssl_target_name_override", "crypto")])


def _registration(svc: CryptoService) -> pb.CreateRegistrationRequest:
    return pb.CreateRegistrationRequest(
        client_public_key=Phone().public_key_spki,
        first_epoch_id=svc.epoch_now(),
        bundle_days=1,
        country_code=svc.settings.country_code,
    )


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def test_each_identity_calls_only_its_methods(
    crypto_service: CryptoService, test_pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = crypto_service
    contacts = pb.ValidateContactsRequest(contacts=[pb.Contact(ebid=b"\x01" * 8, ecc=b"\x02")])
    async with _channel(svc, test_pki, "api") as api, _channel(svc, test_pki, "matcher") as matcher:
        api_stub, matcher_stub = pb_grpc.CryptoServiceStub(api), pb_grpc.CryptoServiceStub(matcher)
        assert await _code(api_stub.CreateRegistration(_registration(svc), timeout=5)) == grpc.StatusCode.OK
        assert await _code(matcher_stub.ValidateContacts(contacts, timeout=5)) == grpc.StatusCode.OK
        with caplog.at_level(logging.WARNING, logger="robert.tls"):
            denied = grpc.StatusCode.PERMISSION_DENIED
            assert await _code(api_stub.ValidateContacts(contacts, timeout=5)) == denied
            assert await _code(matcher_stub.CreateRegistration(_registration(svc), timeout=5)) == denied
            many = pb.AuthenticateRequestsRequest()
            assert await _code(matcher_stub.AuthenticateRequests(many, timeout=5)) == denied
        # the public key is public: any certificate of the plane may read it
        key = await matcher_stub.GetRegistrationPublicKey(pb.GetRegistrationPublicKeyRequest(), timeout=5)
        assert key.public_key == svc.keystore.registration_public_key()
    for name, forbidden in (("issuer-test", "AuthenticateRequests"), ("seed", "CreateRegistration"),
                            ("portal", "DeleteIdentity"), ("crypto", "ValidateContacts"),
                            ("api", "ListIdentities"),
                            ("api", "CreateRegistrations"), ("matcher", "CreateRegistrations")):  # fmt: skip
        async with _channel(svc, test_pki, name) as channel:
            method = getattr(pb_grpc.CryptoServiceStub(channel), forbidden)
            request = {"AuthenticateRequests": pb.AuthenticateRequestsRequest(),
                       "CreateRegistration": _registration(svc),
                       "DeleteIdentity": pb.DeleteIdentityRequest(id_a=b"\x00" * 5),
                       "ValidateContacts": contacts,
                       "CreateRegistrations": pb.CreateRegistrationsRequest(count=1),
                       "ListIdentities": pb.ListIdentitiesRequest()}[forbidden]  # fmt: skip
            assert await _code(method(request, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED, name
    refused = [r for r in caplog.records if r.getMessage() == "gRPC call refused"]
    assert [(r.identity, r.method.rsplit("/", 1)[1]) for r in refused] == [  # type: ignore[attr-defined]
        ("api", "ValidateContacts"), ("matcher", "CreateRegistration"), ("matcher", "AuthenticateRequests"),
        ("issuer-test", "AuthenticateRequests"), ("seed", "CreateRegistration"), ("portal", "DeleteIdentity"),
        ("crypto", "ValidateContacts"), ("api", "ListIdentities"), ("api", "CreateRegistrations"),
        ("matcher", "CreateRegistrations"),
    ]  # fmt: skip
    text = caplog.text
    assert "\\x01" not in text and "0101010101010101" not in text  # no value of the call


@pytest.mark.parametrize("who", ["no certificate", "expired", "other CA", "plaintext"])
async def test_strangers_cannot_connect(crypto_service: CryptoService, test_pki: Path, who: str) -> None:
    svc = crypto_service
    if who == "plaintext":
        channel = grpc.aio.insecure_channel(svc.address)
    elif who == "other CA":
        channel = _channel(svc, test_pki, "api", ca_dir=test_pki / "other-ca")
    else:
        channel = _channel(svc, test_pki, None if who == "no certificate" else "expired")
    async with channel:
        stub = pb_grpc.CryptoServiceStub(channel)
        code = await _code(stub.GetRegistrationPublicKey(pb.GetRegistrationPublicKeyRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails: no call reaches the service


async def test_the_client_checks_the_server_is_the_crypto_service(
    crypto_service: CryptoService, test_pki: Path
) -> None:
    """A server with a good certificate of another component (here: ``codes``) is not the crypto service."""
    creds = grpc.ssl_channel_credentials(
        (test_pki / "ca.pem").read_bytes(),
        (test_pki / "api.key").read_bytes(),
        (test_pki / "api.pem").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "codes")]
    async with grpc.aio.secure_channel(crypto_service.address, creds, options=options) as channel:
        stub = pb_grpc.CryptoServiceStub(channel)
        code = await _code(stub.GetRegistrationPublicKey(pb.GetRegistrationPublicKeyRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


def test_missing_certificate_files_stop_start_up(tmp_path: Path) -> None:
    from crypto_backend.service import RIGHTS
    from robert_common.tls import secure_server

    settings = load_settings(data_dir=tmp_path, crypto_listen="127.0.0.1:0")
    with pytest.raises(SettingsError, match="robert certs init"):
        secure_server(settings, "crypto", "127.0.0.1:0", RIGHTS)
