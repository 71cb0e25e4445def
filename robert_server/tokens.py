"""Signed JWTs the phone API hands out (PROTOCOL.md 6): ES256, header ``kid``, claims ``iss``, ``exp``.

- ``declarationToken``: only when at risk, for the health-insurance sick-leave declaration;
- ``analyticsToken``: with every /status, lets the phone send anonymous analytics;
- ``reportValidationToken``: states that a positive test was declared (/report).

Each kind has its own P-256 key (PEM, PKCS#8) named in the settings; when a setting is unset the key
lives in ``<data_dir>/jwt/<kind>.pem`` and is generated there on first start (development).
The key id is the first 16 hex digits of the SHA-256 of the public key (SPKI DER).

Tokens are assembled here (RFC 7515 compact JWS: the same header and claims PyJWT writes) rather than
with ``jwt.encode``: one analyticsToken per /status, and PyJWT's generic path costs as much CPU as the
ECDSA signature itself. Verifiers (PyJWT in the tests, the services that receive them) are unaffected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from robert_common.files import write_private
from robert_common.settings import Settings

KINDS = ("declaration", "analytics", "report")
_ES256 = ec.ECDSA(hashes.SHA256())


class TokenKeyError(RuntimeError):
    """A configured token key cannot be read (the message names the file, never the key)."""


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@dataclass(frozen=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    kid: str
    header: bytes = field(init=False, repr=False)  # the encoded JWS header, the same for every token

    def __post_init__(self) -> None:
        header = orjson.dumps({"alg": "ES256", "kid": self.kid, "typ": "JWT"})
        object.__setattr__(self, "header", _b64url(header))

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact ES256 JWS of ``claims`` (signature: r | s, 32 bytes each, RFC 7518 3.4)."""
        signing_input = self.header + b"." + _b64url(orjson.dumps(claims))
        r, s = decode_dss_signature(self.private_key.sign(signing_input, _ES256))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return (signing_input + b"." + _b64url(signature)).decode()

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def _generate(path: Path) -> None:
    """Write a new P-256 key (PKCS#8 PEM, mode 0600) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)


def load_key(path: Path) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise TokenKeyError(f"cannot read the token key {path}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise TokenKeyError(f"the token key {path} is not a P-256 private key")
    return SigningKey(key, key_id(key.public_key()))


def key_path(settings: Settings, kind: str) -> tuple[Path, bool]:
    """The key file of ``kind``, and whether it may be generated (unset setting: development default)."""
    configured: Path | None = getattr(settings, f"{kind}_token_key_file")
    if configured is not None:
        return configured, False
    return settings.data_dir / "jwt" / f"{kind}.pem", True


def _jti() -> str:
    """A random token id: 32 hex digits, as uuid4().hex gave (122 random bits; these are 128)."""
    return os.urandom(16).hex()


class TokenSigner:
    """Signs the three kinds of token; ``now`` is Unix seconds from the one clock."""

    def __init__(self, keys: dict[str, SigningKey], settings: Settings) -> None:
        self.keys = keys
        self.issuer = settings.jwt_issuer
        self.lifetimes = {
            "declaration": settings.declaration_token_lifetime,
            "analytics": settings.analytics_token_lifetime,
            "report": settings.report_token_lifetime,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenSigner:
        keys = {}
        for kind in KINDS:
            path, generate = key_path(settings, kind)
            if generate and not path.exists():
                _generate(path)
            keys[kind] = load_key(path)
        return cls(keys, settings)

    def declaration_jti(self, id_a: bytes, latest_risk_epoch: int) -> str:
        """The jti of a declarationToken: the same for one exposure of one phone (so the declaration
        service can refuse a second declaration), and, being keyed, unlinkable to id_A by anyone else."""
        secret = hashlib.sha256(
            b"robert-declaration-jti|"
            + self.keys["declaration"].private_key.private_numbers().private_value.to_bytes(32, "big")
        ).digest()
        msg = id_a + latest_risk_epoch.to_bytes(8, "big")
        return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]

    def _sign(self, kind: str, now: float, claims: dict[str, Any]) -> str:
        key = self.keys[kind]
        iat = int(now)
        payload = {"iss": self.issuer, "iat": iat, "exp": iat + self.lifetimes[kind], **claims}
        return key.sign(payload)

    def declaration_token(self, now: float, *, last_contact_ntp: int, notification_ntp: int, jti: str) -> str:
        """For the sick-leave declaration: the dates of the last contact and of the notification."""
        return self._sign(
            "declaration",
            now,
            {
                "jti": jti,
                "lastContactDateTimestamp": last_contact_ntp,
                "notificationDateTimestamp": notification_ntp,
            },
        )

    def analytics_token(self, now: float) -> str:
        return self._sign("analytics", now, {"jti": _jti()})

    def report_validation_token(self, now: float) -> str:
        return self._sign("report", now, {"jti": _jti()})

    def public_key_pem(self, kind: str) -> bytes:
        return self.keys[kind].public_pem
