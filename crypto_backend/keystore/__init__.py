"""The key store: K_S per UTC day, K_G, the registration P-256 key pair, the KEK (PROTOCOL.md 2).

:class:`KeyStore` is the interface the crypto service uses (a seam for a PKCS#11 HSM);
:class:`FileKeyStore` is the passphrase-encrypted file implementation.
"""

from crypto_backend.keystore.base import KeyStore, KeyStoreError, UnknownKeyVersionError
from crypto_backend.keystore.file import FileKeyStore, KeyMaterial, RotationResult
from crypto_backend.keystore.setup import (
    days_ahead,
    ensure_dev_keystore,
    open_keystore,
    resolve_passphrase,
    utc_today,
)

__all__ = [
    "FileKeyStore",
    "KeyMaterial",
    "KeyStore",
    "KeyStoreError",
    "RotationResult",
    "UnknownKeyVersionError",
    "days_ahead",
    "ensure_dev_keystore",
    "open_keystore",
    "resolve_passphrase",
    "utc_today",
]
