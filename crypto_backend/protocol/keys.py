"""Registration keys (PROTOCOL.md section 2): the phone's two keys from one ECDH on P-256.

``K_A,mac = HMAC-SHA256(shared secret, "mac")`` and ``K_A,tuples = HMAC-SHA256(shared secret, "tuples")``,
the shared secret being ECDH(server private key, phone public key).
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto_backend.protocol._checks import BYTES_LIKE
from crypto_backend.protocol.constants import LABEL_MAC, LABEL_TUPLES
from crypto_backend.protocol.errors import ProtocolError


def derive_client_keys(
    server_private_key: ec.EllipticCurvePrivateKey, client_public_spki: bytes
) -> tuple[bytes, bytes]:
    """``(K_A,mac, K_A,tuples)`` from ECDH(server private, phone public) (section 2).

    ``client_public_spki`` is the DER SubjectPublicKeyInfo the phone sends (after base64 decoding).
    Anything but a valid P-256 public key raises :class:`ProtocolError`.
    """
    if not isinstance(server_private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        server_private_key.curve, ec.SECP256R1
    ):
        raise ProtocolError("server key is not a P-256 private key")
    if not isinstance(client_public_spki, BYTES_LIKE):
        raise ProtocolError("client public key must be bytes")
    try:
        public = serialization.load_der_public_key(bytes(client_public_spki))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ProtocolError("client public key is not a valid P-256 SubjectPublicKeyInfo") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise ProtocolError("client public key is not a P-256 key")
    try:
        secret = server_private_key.exchange(ec.ECDH(), public)
    except ValueError:
        raise ProtocolError("client public key is not a valid P-256 point") from None
    return (
        hmac.digest(secret, LABEL_MAC, "sha256"),
        hmac.digest(secret, LABEL_TUPLES, "sha256"),
    )
