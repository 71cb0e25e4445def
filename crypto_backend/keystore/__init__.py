"""The key store: K_S per UTC day, K_G, the registration P-256 key pair, the KEK (PROTOCOL.md 2).

:class:`KeyStore` is the interface the crypto service uses; :class:`FileKeyStore` is the
passphrase-encrypted file implementation (development), ``pkcs11.Pkcs11KeyStore`` the HSM one
(imported only when ``ROBERT_KEYSTORE=pkcs11``).
"""

from crypto_backend.keystore.base import KeyStore, KeyStoreError, RotationResult, UnknownKeyVersionError
from crypto_backend.keystore.file import FileKeyStore, KeyMaterial
from crypto_backend.keystore.setup import (
    create_keystore,
    days_ahead,
    ensure_dev_keystore,
    is_dev_keystore,
    open_file_keystore,
    open_keystore,
    resolve_passphrase,
    resolve_pin,
    utc_today,
)

__all__ = [
    "FileKeyStore",
    "KeyMaterial",
    "KeyStore",
    "KeyStoreError",
    "RotationResult",
    "UnknownKeyVersionError",
    "create_keystore",
    "days_ahead",
    "ensure_dev_keystore",
    "is_dev_keystore",
    "open_file_keystore",
    "open_keystore",
    "resolve_passphrase",
    "resolve_pin",
    "utc_today",
]
