"""JWT codes from SI-DEP (PROTOCOL.md 7): an ES256 JWS with header ``kid`` and claims ``iat``, ``jti``.

The signature is checked against the key of ``kid`` in ``ROBERT_CODES_JWT_PUBLIC_KEYS``; ``iat`` may
not be in the future (beyond a small skew) nor older than the lifetime (10 days). The one-use rule
is kept by the ``codes`` collection, under an HMAC of ``kid`` and ``jti``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

ALGORITHM = "ES256"
MAX_JTI_LENGTH = 256


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from PEM or base64 of DER SubjectPublicKeyInfo; ValueError otherwise."""
    raw = text.strip()
    key = (
        load_pem_public_key(raw.encode())
        if raw.startswith("-----")
        else load_der_public_key(base64.b64decode(raw, validate=True))
    )
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not a P-256 public key")
    return key


@dataclass(frozen=True, slots=True)
class JwtClaims:
    kid: str
    jti: str
    iat: int


class JwtCodeError(Exception):
    """A JWT code that does not verify; ``reason`` is a metric label, never shown to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwtCodeVerifier:
    """Checks JWT codes against a key-id map; time comes from the caller (the injected clock)."""

    def __init__(self, public_keys: dict[str, str], *, lifetime_days: int, skew_seconds: int) -> None:
        self._keys = {kid: load_public_key(pem) for kid, pem in public_keys.items()}
        self._lifetime = lifetime_days * 86_400
        self._skew = skew_seconds

    def verify(self, token: str, now: float) -> JwtClaims:
        """The claims of a valid code at unix time ``now``; JwtCodeError with a reason otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise JwtCodeError("malformed") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise JwtCodeError("unknown_key")
        key = self._keys.get(kid)
        if key is None or header.get("alg") != ALGORITHM:
            raise JwtCodeError("unknown_key")
        try:
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )  # fmt: skip
        except jwt.PyJWTError:
            raise JwtCodeError("bad_signature") from None
        iat, jti = claims.get("iat"), claims.get("jti")
        if not isinstance(iat, int) or isinstance(iat, bool) or not isinstance(jti, str):
            raise JwtCodeError("malformed")
        if not jti or len(jti) > MAX_JTI_LENGTH:
            raise JwtCodeError("malformed")
        if iat > now + self._skew or iat + self._lifetime <= now:
            raise JwtCodeError("expired")
        return JwtClaims(kid=kid, jti=jti, iat=iat)


def sign_jwt_code(private_key: ec.EllipticCurvePrivateKey, kid: str, jti: str, iat: int) -> str:
    """A JWT code as SI-DEP makes one (for tests, the simulator and benchmarks)."""
    return jwt.encode({"iat": iat, "jti": jti}, private_key, algorithm=ALGORITHM, headers={"kid": kid})
