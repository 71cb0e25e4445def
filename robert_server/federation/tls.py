"""Mutual TLS between federated countries: one certificate per country, one CA per partner.

Each country holds one federation certificate (ROBERT_FEDERATION_TLS_CERT / _KEY), shown to partners
both when it serves and when it calls them. Each partner is known by the CA that signs its certificates
(``ca`` of ROBERT_FEDERATION_PARTNERS). The server accepts a client whose certificate chains to any
partner's CA (gRPC checks the chain), then :func:`identify` names the partner whose CA issued that very
certificate: a partner's CA cannot vouch for another country. A client checks the partner's server
certificate against that partner's CA only.

This plane is apart from the internal one (components of one system): other CAs, other files.
:func:`create_country_pki` writes a development CA and certificate for one country.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from robert_common.files import write_private
from robert_common.settings import FederationPartner, Settings, SettingsError

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a delivery call: up to 500 batches of up to 100 contacts


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SettingsError(f"invalid settings:\n  {what}: cannot read {path}: {e.strerror}") from None


def own_pair(settings: Settings) -> tuple[bytes, bytes]:
    """This country's federation (certificate, key) PEM."""
    cert, key = settings.federation_tls_cert, settings.federation_tls_key
    if cert is None or key is None:
        raise SettingsError(
            "invalid settings:\n  ROBERT_FEDERATION_TLS_CERT and ROBERT_FEDERATION_TLS_KEY are needed"
            " with ROBERT_FEDERATION_PARTNERS (`robert federation dev-cert` makes development ones)"
        )
    return _read(cert, "ROBERT_FEDERATION_TLS_CERT"), _read(key, "ROBERT_FEDERATION_TLS_KEY")


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """Our certificate; clients must show a certificate from one of the partners' CAs."""
    if not settings.federation_partners:
        raise SettingsError("invalid settings:\n  ROBERT_FEDERATION_PARTNERS: no partner to serve")
    cert, key = own_pair(settings)
    roots = b"".join(_read(p.ca, f"CA of partner {p.label}") for p in settings.federation_partners)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=roots, require_client_auth=True)


def open_channel(settings: Settings, partner: FederationPartner) -> grpc.aio.Channel:
    """A channel to ``partner``'s federation service: its certificate must come from its CA."""
    cert, key = own_pair(settings)
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(partner.ca, f"CA of partner {partner.label}"),
        private_key=key,
        certificate_chain=cert,
    )
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if partner.server_name:
        options.append(("grpc.ssl_target_name_override", partner.server_name))
    return grpc.aio.secure_channel(partner.endpoint, creds, options=options)


@lru_cache(maxsize=64)
def _load_cas(pem: bytes) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(pem))


def peer_certificate(context: grpc.aio.ServicerContext) -> x509.Certificate | None:
    """The client certificate gRPC verified, or None (no TLS, no certificate)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        return None


def identify(cert: x509.Certificate, partners: list[FederationPartner]) -> FederationPartner | None:
    """The partner whose CA directly issued ``cert`` (None: no partner)."""
    for partner in partners:
        try:
            cas = _load_cas(partner.ca.read_bytes())
        except (OSError, ValueError):
            continue
        for ca in cas:
            try:
                cert.verify_directly_issued_by(ca)
                return partner
            except (ValueError, TypeError, InvalidSignature):
                continue
    return None


# --- development certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class CountryPki:
    """A country's development CA (give ``ca`` to partners) and its federation certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_country_pki(directory: Path, country_code: int, days: int = 825) -> CountryPki:
    """Write ``ca.pem`` (a CA for this country), ``federation.pem`` and ``federation.key`` (its
    certificate, for localhost/127.0.0.1, client and server use) in ``directory``; refuses to overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    out = CountryPki(directory / "ca.pem", directory / "federation.pem", directory / "federation.key")
    if out.ca.exists() or out.cert.exists():
        raise FileExistsError(f"federation certificates exist in {directory}")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    label = f"0x{country_code:02x}"
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ROBERT federation CA {label}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"robert-federation-{label}")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(out.key, _pem_key(key))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return out
