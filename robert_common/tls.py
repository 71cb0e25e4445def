"""The closed internal plane: mutual TLS and per-method rights on every internal gRPC service.

Every component holds one certificate signed by the plane's CA; its identity is the certificate's
common name (``api``, ``matcher``, ``seed``, ``issuer-<name>``...). A server accepts only clients with a
certificate from that CA (:func:`server_credentials`), then :class:`Authorization` lets each identity
call only the methods its service's :class:`MethodRights` grant it: anything else ends
PERMISSION_DENIED, logged with the identity and the method (never a value of the call). Clients check
the server's certificate names the service (``crypto``, ``codes``) whatever address they dial.

Development: :func:`init_ca` and :func:`issue` write a CA and certificates with ``cryptography``
(``robert certs``; ``robert up`` creates them on first start). Production gives the files in settings.
Plaintext is possible only with ``ROBERT_GRPC_PLAINTEXT``, and only on loopback addresses.

:func:`http_ssl_context` is the phone API's own TLS (1.2 and 1.3 only), for operators without a proxy.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import ipaddress
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from robert_common.files import write_private
from robert_common.settings import Settings, SettingsError

log = logging.getLogger("robert.tls")

CA_NAME = "ca"
DEV_COMPONENTS = ("crypto", "codes", "api", "matcher", "seed", "portal")  # certificates `robert up` creates
CA_DAYS = 3650
CERT_DAYS = 825
_plaintext_warned: list[bool] = []  # warn once per process
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


# --- files -------------------------------------------------------------------------------------


def tls_dir(settings: Settings) -> Path:
    return settings.grpc_tls_dir or settings.data_dir / "tls"


@dataclass(frozen=True)
class TlsFiles:
    """The CA certificate, and this component's certificate and private key (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        try:
            return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()
        except OSError as e:
            raise SettingsError(
                f"invalid settings:\n  internal TLS files: cannot read {e.filename}: {e.strerror}"
                " (create development ones with `robert certs init`, or set ROBERT_GRPC_TLS_*)"
            ) from None


def files_for(settings: Settings, component: str) -> TlsFiles:
    """The TLS files of ``component``: the ROBERT_GRPC_TLS_* settings, else ``<tls dir>/<component>.pem``."""
    d = tls_dir(settings)
    return TlsFiles(
        ca=settings.grpc_tls_ca or d / f"{CA_NAME}.pem",
        cert=settings.grpc_tls_cert or d / f"{component}.pem",
        key=settings.grpc_tls_key or d / f"{component}.key",
    )


# --- a development CA and its certificates ------------------------------------------------------


def check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= _NAME_OK or name == CA_NAME:
        raise ValueError("a certificate name is 1 to 64 characters a-z, 0-9 and '-' (and not 'ca')")
    return name


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def init_ca(directory: Path, *, days: int = CA_DAYS, now: dt.datetime | None = None) -> Path:
    """Create a CA (``ca.pem``, ``ca.key`` 0600) in ``directory``; refuses to replace one."""
    cert_path = directory / f"{CA_NAME}.pem"
    if cert_path.exists():
        raise FileExistsError(f"{cert_path} exists")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ROBERT internal CA")])
    start = _now(now) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / f"{CA_NAME}.key", key)
    _write_cert(cert_path, cert)
    return cert_path


def issue(
    directory: Path, name: str, *, days: int = CERT_DAYS, now: dt.datetime | None = None
) -> tuple[Path, Path]:
    """A certificate for identity ``name`` (CN and DNS name; also localhost and 127.0.0.1, for servers
    on this machine), signed by the CA of ``directory``; client and server use. Returns (cert, key)."""
    check_name(name)
    ca_cert = x509.load_pem_x509_certificate((directory / f"{CA_NAME}.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / f"{CA_NAME}.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now(now) - dt.timedelta(minutes=5)
    san = [x509.DNSName(name), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def ensure_dev_certs(directory: Path, names: Iterable[str] = DEV_COMPONENTS) -> list[str]:
    """``robert up``: the CA and each missing certificate; returns the names created."""
    created = []
    if not (directory / f"{CA_NAME}.pem").exists():
        init_ca(directory)
        created.append(CA_NAME)
    for name in names:
        if not (directory / f"{name}.pem").exists() or not (directory / f"{name}.key").exists():
            issue(directory, name)
            created.append(name)
    return created


@dataclass(frozen=True)
class CertInfo:
    name: str  # file stem
    subject: str  # the identity (CN)
    not_after: dt.datetime
    is_ca: bool

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.not_after <= _now(now)


def list_certs(directory: Path) -> list[CertInfo]:
    out = []
    for path in sorted(directory.glob("*.pem")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            continue
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        subject = str(cn[0].value) if cn else cert.subject.rfc4514_string()
        out.append(CertInfo(path.stem, subject, cert.not_valid_after_utc, is_ca))
    return out


# --- gRPC credentials ----------------------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext(settings: Settings, *addresses: str) -> bool:
    """True when the internal plane runs without TLS (ROBERT_GRPC_PLAINTEXT): allowed only when every
    address this process listens on or dials is a loopback one; SettingsError otherwise."""
    if not settings.grpc_plaintext:
        return False
    outside = [a for a in addresses if not _is_loopback(a)]
    if outside:
        raise SettingsError(
            "invalid settings:\n  ROBERT_GRPC_PLAINTEXT: plaintext gRPC is for development on loopback"
            f" addresses only, not {', '.join(outside)}"
        )
    if not _plaintext_warned:
        _plaintext_warned.append(True)
        log.warning("internal gRPC WITHOUT TLS nor rights (ROBERT_GRPC_PLAINTEXT): development only")
    return True


def server_credentials(settings: Settings, component: str, listen: str) -> grpc.ServerCredentials | None:
    """Mutual TLS credentials of a server (clients need a certificate from the CA), or None when
    plaintext is allowed (see :func:`check_plaintext`)."""
    if check_plaintext(settings, listen):
        return None
    ca, cert, key = files_for(settings, component).read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(settings: Settings, component: str) -> grpc.ChannelCredentials:
    ca, cert, key = files_for(settings, component).read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def open_channel(
    settings: Settings,
    component: str,
    address: str,
    service: str,
    options: list[tuple[str, Any]] | None = None,
    target: str | None = None,
) -> grpc.aio.Channel:
    """A channel from ``component`` (its certificate) to ``service`` at ``address``: the server's
    certificate must name ``service``, whatever the address. Plaintext only as check_plaintext allows.
    ``address`` may be a comma-separated list (one subchannel each): give the gRPC ``target`` for it."""
    opts = list(options or [])
    target = target or address
    if check_plaintext(settings, *[a.strip() for a in address.split(",")]):
        return grpc.aio.insecure_channel(target, options=opts)
    opts.append(("grpc.ssl_target_name_override", service))
    return grpc.aio.secure_channel(target, channel_credentials(settings, component), options=opts)


# --- authorisation -------------------------------------------------------------------------------


class MethodRights:
    """Which identity may call which method: identity pattern (fnmatch, e.g. ``issuer-*``) -> method
    names of ``service`` (e.g. ``robert.crypto.v1.CryptoService``). Default: nothing."""

    def __init__(self, service: str, rights: Mapping[str, Iterable[str]]) -> None:
        self.service = service
        self.rules = {
            pattern: frozenset(f"/{service}/{m}" for m in methods) for pattern, methods in rights.items()
        }

    def allows(self, identity: str | None, full_method: str) -> bool:
        if not identity:
            return False
        return any(
            full_method in methods and fnmatch.fnmatchcase(identity, pattern)
            for pattern, methods in self.rules.items()
        )


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the client certificate gRPC verified, or None (no TLS, no certificate)."""
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else None


class Authorization(grpc.aio.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) every call its :class:`MethodRights` do not grant the caller."""

    def __init__(
        self, rights: MethodRights, on_denied: Callable[[str, str | None], None] | None = None
    ) -> None:
        self.rights = rights
        self.on_denied = on_denied

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        identity = peer_identity(context)
        if self.rights.allows(identity, method):
            return
        log.warning("gRPC call refused", extra={"method": method, "identity": identity or "(none)"})
        if self.on_denied is not None:
            self.on_denied(method, identity)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "this client may not call this method")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method  # type: ignore[attr-defined]
        check = self._check
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}  # fmt: skip
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(method, context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(method, context)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kw)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(method, context)
                return await inner_su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(method, context)
            async for item in inner_ss(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kw)


def secure_server(
    settings: Settings,
    component: str,
    listen: str,
    rights: MethodRights,
    options: list[tuple[str, Any]] | None = None,
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server bound to ``listen`` with mutual TLS and ``rights`` (or plaintext, as
    check_plaintext allows, without rights); returns it (not started) and its port."""
    creds = server_credentials(settings, component, listen)
    interceptors = [Authorization(rights)] if creds is not None else []
    # No SO_REUSEPORT unless asked: a second server on the same port fails to start, loudly.
    server = grpc.aio.server(interceptors=interceptors, options=options or [("grpc.so_reuseport", 0)])
    try:
        port = (
            server.add_secure_port(listen, creds) if creds is not None else server.add_insecure_port(listen)
        )
    except RuntimeError:  # grpcio >= 1.60 raises instead of answering 0
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port


# --- the phone API's own TLS ---------------------------------------------------------------------


def http_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS 1.2 and 1.3 only, with ROBERT_HTTP_TLS_CERT / _KEY; None (plain HTTP) when unset."""
    cert, key = settings.http_tls_cert, settings.http_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SettingsError("invalid settings:\n  ROBERT_HTTP_TLS_CERT and ROBERT_HTTP_TLS_KEY go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or type(e).__name__
        raise SettingsError(f"invalid settings:\n  ROBERT_HTTP_TLS_CERT/KEY: {reason}") from None
    return context
