"""Opening the configured key store, and the development key store ``robert up`` creates.

Passphrase, first found wins: ``ROBERT_KEYSTORE_PASSPHRASE``, the file named by
``ROBERT_KEYSTORE_PASSPHRASE_FILE``, then the development file ``<data_dir>/keystore.pass`` that
:func:`ensure_dev_keystore` writes (with a warning in the log: it is for development only).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from pathlib import Path

from crypto_backend.keystore.base import KeyStoreError
from crypto_backend.keystore.file import FileKeyStore, _atomic_write
from robert_common.clock import Clock
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


def open_keystore(settings: Settings) -> FileKeyStore:
    """The configured key store, decrypted (KeyStoreError with a clear message otherwise)."""
    passphrase, dev = resolve_passphrase(settings)
    if dev:
        log.warning("using the development key store passphrase file: not for production")
    return FileKeyStore.load(settings.resolved_keystore_path, passphrase)


def ensure_dev_keystore(settings: Settings, clock: Clock) -> Path:
    """For ``robert up``: create a key store (and, if no passphrase is configured, a 0600 passphrase
    file ``<data_dir>/keystore.pass``) when none exists; bring an existing one's day keys up to date."""
    path = settings.resolved_keystore_path
    today = utc_today(clock)
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
        _atomic_write(dev_passphrase_path(settings), passphrase + b"\n")
        os.chmod(dev_passphrase_path(settings), 0o600)
    store = FileKeyStore.create(path, passphrase)
    store.rotate(today, days_ahead(settings), settings.key_retention_days)
    log.warning(
        "created a DEVELOPMENT key store; its passphrase file is next to it: not for production",
        extra={"path": str(path)},
    )
    return path
