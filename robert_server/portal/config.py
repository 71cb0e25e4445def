"""What the portal derives from the settings: URLs, secrets read from files, the allowed professions."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from robert_common import tls
from robert_common.files import create_private
from robert_common.settings import Settings, SettingsError

from .oidc import load_client_key

DEV_CLIENT_SECRET_FILE = "portal/dev_client_secret"  # noqa: S105 - a file name
AUDIT_KEY_FILE = "portal/audit_key"
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class PortalConfig:
    public_url: str  # no trailing slash
    issuer: str
    client_id: str
    client_secret: str
    client_key: bytes | None  # PEM private key of private_key_jwt, or None: client_secret_basic
    audit_key: bytes
    issuer_token: str
    professions: frozenset[str]

    @property
    def redirect_uri(self) -> str:
        return self.public_url + "/auth/callback"

    @property
    def post_logout_uri(self) -> str:
        return self.public_url + "/logged-out"

    @property
    def rp_id(self) -> str:
        """WebAuthn relying party id: the host browsers see (an IP address is not allowed)."""
        return urlsplit(self.public_url).hostname or "localhost"

    @property
    def secure(self) -> bool:
        """True when the page is served over HTTPS or on localhost (a potentially trustworthy origin)."""
        parts = urlsplit(self.public_url)
        return parts.scheme == "https" or parts.hostname in ("localhost", "127.0.0.1")


def dev_secret(path: Path) -> str:
    """Read ``path``, creating it (mode 0600, 256 random bits) if absent: development secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        create_private(path, (value + "\n").encode())
    except FileExistsError:
        return path.read_text().strip()
    return value


def public_jwks(client_key: bytes) -> dict[str, Any]:
    """The JWK set of the private_key_jwt key's public half (what the provider registers)."""
    import json

    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    key = load_client_key(client_key).public_key()
    algo = ECAlgorithm if isinstance(key, ec.EllipticCurvePublicKey) else RSAAlgorithm
    return {"keys": [json.loads(algo.to_jwk(key))]}


def issuer_channel_credentials(settings: Settings) -> Any:
    """gRPC credentials to the code issuer: the ROBERT_PORTAL_CODES_TLS_* files when set (TLS with that CA,
    mutual TLS with a client pair), else the internal plane's certificate ``portal``; None: plaintext
    (ROBERT_GRPC_PLAINTEXT, loopback only)."""
    import grpc

    ca, cert, key = (
        settings.portal_codes_tls_ca,
        settings.portal_codes_tls_cert,
        settings.portal_codes_tls_key,
    )
    if ca is None:
        if cert is not None or key is not None:
            raise SettingsError(
                "invalid settings:\n  ROBERT_PORTAL_CODES_TLS_CERT and _KEY need ROBERT_PORTAL_CODES_TLS_CA"
            )
        # the internal plane's own mutual TLS, with the portal's certificate (plaintext only on loopback)
        if tls.check_plaintext(settings, settings.codes_address):
            return None
        return tls.channel_credentials(settings, "portal")
    if (cert is None) != (key is None):
        raise SettingsError(
            "invalid settings:\n  ROBERT_PORTAL_CODES_TLS_CERT and ROBERT_PORTAL_CODES_TLS_KEY go together"
        )
    try:
        roots = ca.read_bytes()
        pair = (key.read_bytes(), cert.read_bytes()) if cert is not None and key is not None else (None, None)
    except OSError as e:
        raise SettingsError(f"invalid settings:\n  portal code issuer TLS files: {e.strerror}") from None
    return grpc.ssl_channel_credentials(roots, pair[0], pair[1])


def dev_issuer_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.portal_dev_idp_port}"


def public_url(settings: Settings) -> str:
    return (settings.portal_public_url or f"http://localhost:{settings.portal_port}").rstrip("/")


def issuer_token(settings: Settings) -> str:
    if settings.portal_issuer_token is not None:
        return settings.portal_issuer_token.get_secret_value()
    if settings.portal_issuer_token_file is not None:
        try:
            return settings.portal_issuer_token_file.read_text().strip()
        except OSError as e:
            raise SettingsError(
                f"invalid settings:\n  ROBERT_PORTAL_ISSUER_TOKEN_FILE: {e.strerror}"
            ) from None
    raise SettingsError(
        "invalid settings:\n  ROBERT_PORTAL_ISSUER_TOKEN: required (from `robert issuers add NAME`)"
    )


def load_config(settings: Settings, public: str | None = None, *, with_token: bool = True) -> PortalConfig:
    """The portal's configuration; development secrets are created in ``data_dir`` when unset."""
    client_key = None
    if settings.portal_oidc_client_key_file is not None:
        try:
            client_key = settings.portal_oidc_client_key_file.read_bytes()
        except OSError as e:
            raise SettingsError(
                f"invalid settings:\n  ROBERT_PORTAL_OIDC_CLIENT_KEY_FILE: {e.strerror}"
            ) from None
        try:
            load_client_key(client_key)
        except (ValueError, TypeError):
            raise SettingsError(
                "invalid settings:\n  ROBERT_PORTAL_OIDC_CLIENT_KEY_FILE: not an RSA or P-256 PEM key"
            ) from None
    if settings.portal_oidc_client_secret is not None:
        client_secret = settings.portal_oidc_client_secret.get_secret_value()
    elif client_key is not None:
        client_secret = ""
    else:
        client_secret = dev_secret(settings.data_dir / DEV_CLIENT_SECRET_FILE)
    if settings.portal_audit_key is not None:
        audit_key = settings.portal_audit_key.get_secret_value().encode()
    else:
        audit_key = dev_secret(settings.data_dir / AUDIT_KEY_FILE).encode()
    if len(audit_key) < MIN_KEY_BYTES:
        raise SettingsError(f"invalid settings:\n  ROBERT_PORTAL_AUDIT_KEY: at least {MIN_KEY_BYTES} bytes")
    return PortalConfig(
        public_url=(public or public_url(settings)).rstrip("/"),
        issuer=(settings.portal_oidc_issuer or dev_issuer_url(settings)).rstrip("/"),
        client_id=settings.portal_oidc_client_id,
        client_secret=client_secret,
        client_key=client_key,
        audit_key=audit_key,
        issuer_token=issuer_token(settings) if with_token else "",
        professions=frozenset(settings.portal_professions),
    )
