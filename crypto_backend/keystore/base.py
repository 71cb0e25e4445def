"""The key store interface the crypto service depends on (PROTOCOL.md section 2).

The service never asks for the KEK or the registration private key as bytes: it asks the store to
*do* the operation (seal, open, derive the per-phone keys). That is the seam for an HSM: a PKCS#11
store keeps the KEK and the P-256 key inside the token (``C_WrapKey``/``C_Encrypt`` with AES-GCM,
``C_DeriveKey`` with ``CKM_ECDH1_DERIVE``) and implements the same methods. ``K_S`` and ``K_G`` are
handed out as bytes because SKINNY-64/192 and the bulk ECC decryption run here, not in a token.

No method may put key bytes into an exception message or a log record.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable


class KeyStoreError(Exception):
    """A key store that cannot be read, written or used. Messages never contain key material."""


class UnknownKeyVersionError(KeyStoreError):
    """A sealed value names a KEK version this store does not hold."""


@runtime_checkable
class KeyStore(Protocol):
    """What the crypto service needs from a key store (file today, HSM tomorrow)."""

    def day_key(self, day: dt.date) -> bytes | None:
        """``K_S(day)`` (24 bytes), or None when the store holds no key for that UTC day."""
        ...

    def days(self) -> list[dt.date]:
        """The UTC days this store holds a ``K_S`` for, in order."""
        ...

    def federation_key(self) -> bytes:
        """The current ``K_G`` (32 bytes): encrypts and decrypts the country code (PROTOCOL.md 3)."""
        ...

    @property
    def federation_key_version(self) -> int: ...

    @property
    def kek_version(self) -> int:
        """Version of the KEK :meth:`seal` uses now."""
        ...

    def registration_public_key(self) -> bytes:
        """The registration P-256 public key, DER SubjectPublicKeyInfo (what apps embed)."""
        ...

    def derive_client_keys(self, client_public_spki: bytes) -> tuple[bytes, bytes]:
        """``(K_A,mac, K_A,tuples)`` from ECDH with a phone's SPKI public key (PROTOCOL.md 2).

        Raises ``ProtocolError`` (a ValueError) for a malformed key or a point not on the curve.
        """
        ...

    def seal(self, plaintext: bytes, associated_data: bytes) -> tuple[int, bytes]:
        """AES-256-GCM under the current KEK: ``(kek_version, nonce | ciphertext | tag)``."""
        ...

    def unseal(self, kek_version: int, sealed: bytes, associated_data: bytes) -> bytes:
        """Open what :meth:`seal` produced; KeyStoreError if it does not authenticate."""
        ...
