"""Opening the configured key store, and the development key store ``robert up`` creates.

``ROBERT_KEYSTORE`` picks the store: ``file`` (an encrypted file, development) or ``pkcs11`` (a token:
``ROBERT_PKCS11_MODULE``, ``ROBERT_PKCS11_TOKEN_LABEL``, and the PIN from ``ROBERT_PKCS11_PIN`` or the
file ``ROBERT_PKCS11_PIN_FILE``). File store passphrase, first found wins: ``ROBERT_KEYSTORE_PASSPHRASE``,
the file named by ``ROBERT_KEYSTORE_PASSPHRASE_FILE``, then the development file
``<data_dir>/keystore.pass`` that :func:`ensure_dev_keystore` writes (with a warning in the log: it is
for development only).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from pathlib import Path

from crypto_backend.keystore.base import KeyStore, KeyStoreError, NoKeysError
from crypto_backend.keystore.file import FileKeyStore
from robert_common.clock import Clock
from robert_common.files import write_private
from robert_common.settings import Settings

log = logging.getLogger(__name__)

DEV_PASSPHRASE_FILE = "keystore.pass"  # noqa: S105 - a file name, not a secret


def days_ahead(settings: Settings) -> int:
    """Day keys generated ahead of today: the bundle horizon (PROTOCOL.md 3) plus one day of margin."""
    return settings.bundle_days + 1


def utc_today(clock: Clock) -> dt.date:
    return clock.utcnow().date()


def dev_passphrase_path(settings: Settings) -> Path:
    return settings.data_dir / DEV_PASSPHRASE_FILE


def _read_passphrase_file(path: Path) -> bytes:
    try:
        data = path.read_bytes().rstrip(b"\r\n")
    except OSError as e:
        raise KeyStoreError(f"cannot read the key store passphrase file {path}: {e.strerror}") from None
    if not data:
        raise KeyStoreError(f"the key store passphrase file {path} is empty")
    if path.stat().st_mode & 0o077:
        log.warning("key store passphrase file is readable by other users", extra={"path": str(path)})
    return data


def resolve_passphrase(settings: Settings) -> tuple[bytes, bool]:
    """The key store passphrase and whether it is the development one (see the module docstring)."""
    if settings.keystore_passphrase is not None:
        value = settings.keystore_passphrase.get_secret_value().encode()
        if not value:
            raise KeyStoreError("ROBERT_KEYSTORE_PASSPHRASE is empty")
        return value, False
    if settings.keystore_passphrase_file is not None:
        return _read_passphrase_file(settings.keystore_passphrase_file), False
    dev = dev_passphrase_path(settings)
    if dev.exists():
        return _read_passphrase_file(dev), True
    raise KeyStoreError(
        "no key store passphrase: set ROBERT_KEYSTORE_PASSPHRASE or ROBERT_KEYSTORE_PASSPHRASE_FILE"
    )


def resolve_pin(settings: Settings) -> str:
    """The PKCS#11 user PIN: ROBERT_PKCS11_PIN, else the file ROBERT_PKCS11_PIN_FILE."""
    if settings.pkcs11_pin is not None:
        pin = settings.pkcs11_pin.get_secret_value()
        if not pin:
            raise KeyStoreError("ROBERT_PKCS11_PIN is empty")
        return pin
    if settings.pkcs11_pin_file is not None:
        return _read_passphrase_file(settings.pkcs11_pin_file).decode()
    raise KeyStoreError("no PKCS#11 PIN: set ROBERT_PKCS11_PIN or ROBERT_PKCS11_PIN_FILE")


def _pkcs11_module(settings: Settings) -> Path:
    if settings.pkcs11_module is None:
        raise KeyStoreError("ROBERT_KEYSTORE=pkcs11 needs ROBERT_PKCS11_MODULE (the token's PKCS#11 library)")
    return settings.pkcs11_module


def is_dev_keystore(settings: Settings) -> bool:
    """True for a file store opened with the development passphrase file (auto-rotation on)."""
    if settings.keystore != "file":
        return False
    try:
        return resolve_passphrase(settings)[1]
    except KeyStoreError:
        return False


def open_keystore(settings: Settings) -> KeyStore:
    """The configured key store, opened (KeyStoreError with a clear message otherwise)."""
    if settings.keystore == "pkcs11":
        from crypto_backend.keystore.pkcs11 import Pkcs11KeyStore

        return Pkcs11KeyStore.open(
            _pkcs11_module(settings), settings.pkcs11_token_label, resolve_pin(settings)
        )
    return open_file_keystore(settings)


def create_keystore(settings: Settings) -> KeyStore:
    """``robert keys init``: new KEK, K_G and registration key pair in the configured store (no day key
    yet). Refuses to overwrite an existing store."""
    if settings.keystore == "pkcs11":
        from crypto_backend.keystore.pkcs11 import Pkcs11KeyStore

        return Pkcs11KeyStore.create(
            _pkcs11_module(settings), settings.pkcs11_token_label, resolve_pin(settings)
        )
    passphrase, dev = resolve_passphrase(settings)
    if dev:
        log.warning("using the development passphrase file: not for production")
    return FileKeyStore.create(settings.resolved_keystore_path, passphrase)


def open_file_keystore(settings: Settings) -> FileKeyStore:
    """The file key store, decrypted."""
    passphrase, dev = resolve_passphrase(settings)
    if dev:
        log.warning("using the development key store passphrase file: not for production")
    return FileKeyStore.load(settings.resolved_keystore_path, passphrase)


def ensure_dev_keystore(settings: Settings, clock: Clock) -> Path | None:
    """For ``robert up``: with ROBERT_KEYSTORE=pkcs11, create the keys in the token if it holds none and
    add the day keys ahead (None). With the file store: create a key store (and, if no passphrase is
    configured, a 0600 passphrase file ``<data_dir>/keystore.pass``) when none exists; bring an existing
    one's day keys up to date."""
    today = utc_today(clock)
    if settings.keystore == "pkcs11":  # the token is the operator's: only its keys are created here
        try:
            store = open_keystore(settings)
        except NoKeysError:
            store = create_keystore(settings)
            log.warning(
                "created the ROBERT keys in the PKCS#11 token", extra={"token": settings.pkcs11_token_label}
            )
        try:
            if store.needs_rotation(today, days_ahead(settings), settings.key_retention_days):
                store.rotate(today, days_ahead(settings), settings.key_retention_days)
        finally:
            store.close()
        return None
    path = settings.resolved_keystore_path
    if path.exists():
        store = open_keystore(settings)
        if store.needs_rotation(today, days_ahead(settings), settings.key_retention_days):
            store.rotate(today, days_ahead(settings), settings.key_retention_days)
        return path
    try:
        passphrase, _ = resolve_passphrase(settings)
    except KeyStoreError:
        passphrase = secrets.token_urlsafe(32).encode()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        write_private(dev_passphrase_path(settings), passphrase + b"\n")
    store = FileKeyStore.create(path, passphrase)
    store.rotate(today, days_ahead(settings), settings.key_retention_days)
    log.warning(
        "created a DEVELOPMENT key store; its passphrase file is next to it: not for production",
        extra={"path": str(path)},
    )
    return path
