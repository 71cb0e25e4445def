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
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class KeyStoreError(Exception):
    """A key store that cannot be read, written or used. Messages never contain key material."""


class NoKeysError(KeyStoreError):
    """The store exists (a reachable token) but holds no ROBERT keys yet: ``robert keys init``."""


class UnknownKeyVersionError(KeyStoreError):
    """A sealed value names a KEK version this store does not hold."""


@dataclass(frozen=True)
class RotationResult:
    added: list[dt.date]
    purged: list[dt.date]


@runtime_checkable
class KeyStore(Protocol):
    """What the crypto service and ``robert keys`` need from a key store (an encrypted file, or a
    PKCS#11 token: crypto_backend/keystore/file.py, pkcs11.py)."""

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

    # --- custody: rotation, retirement, picking up another process's changes ---------------------

    def kek_versions(self) -> list[int]:
        """The KEK versions this store holds, in order (the current one is the highest)."""
        ...

    def needs_rotation(self, today: dt.date, days_ahead: int, retention_days: int) -> bool:
        """True when a day key from ``today`` to ``today + days_ahead`` is missing or one has expired."""
        ...

    def rotate(self, today: dt.date, days_ahead: int, retention_days: int) -> RotationResult:
        """Add the missing day keys up to ``today + days_ahead``, destroy those older than
        ``today - retention_days`` (PROTOCOL.md 2)."""
        ...

    def rotate_kek(self) -> int:
        """Add a new KEK version, used by :meth:`seal` from now on; return it."""
        ...

    def rotate_federation_key(self) -> int:
        """Add a new K_G version, used from now on (a federation-wide change); return it."""
        ...

    def retire_kek(self, version: int) -> None:
        """Destroy an old KEK version (never the current one): what it sealed no longer opens."""
        ...

    def changed(self) -> bool:
        """True when another process (``robert keys``) changed the store since it was loaded."""
        ...

    def reload(self) -> None:
        """Read the store again (after :meth:`changed`)."""
        ...

    def close(self) -> None:
        """Release what the store holds open (a PKCS#11 session); key bytes in memory are dropped."""
        ...
