"""The server-side pepper: codes, jtis and sources are stored only as HMAC-SHA256 under it (issue 4).

Production sets ``ROBERT_CODES_PEPPER``; development generates a random pepper once in
``<data_dir>/codes_pepper`` (mode 0600) and every process of the deployment reads the same file.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

from robert_common.files import create_private
from robert_common.settings import Settings, SettingsError

PEPPER_FILE = "codes_pepper"
MIN_PEPPER_BYTES = 16

# Domain separation: a code, a jti, a source address and a report id never hash to the same value.
_CODE = b"robert-code\x00"
_JTI = b"robert-jti\x00"
_SOURCE = b"robert-source\x00"
_REPORT = b"robert-report-id\x00"


def load_pepper(settings: Settings) -> bytes:
    """The pepper from the settings, or from (created on first use) the dev file in ``data_dir``."""
    if settings.codes_pepper is not None:
        pepper = settings.codes_pepper.get_secret_value().encode()
        if len(pepper) < MIN_PEPPER_BYTES:
            raise SettingsError(
                f"invalid settings:\n  ROBERT_CODES_PEPPER: at least {MIN_PEPPER_BYTES} bytes"
            )
        return pepper
    return _dev_pepper(settings.data_dir / PEPPER_FILE)


def _dev_pepper(path: Path) -> bytes:
    """Read the pepper file, creating it atomically (O_EXCL) if absent so concurrent starts agree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    try:
        create_private(path, value)
    except FileExistsError:
        pass
    else:
        return value
    for _ in range(50):  # another process may be between create and write
        value = path.read_bytes().strip()
        if len(value) >= MIN_PEPPER_BYTES:
            return value
        time.sleep(0.02)
    raise SettingsError(f"the codes pepper file {path} is empty or too short")


def code_key(pepper: bytes, normalised_code: str) -> bytes:
    """The stored ``_id`` of a short or long code: HMAC-SHA256(pepper, normalised code)."""
    return hmac.new(pepper, _CODE + normalised_code.encode(), hashlib.sha256).digest()


def jti_key(pepper: bytes, kid: str, jti: str) -> bytes:
    """The stored ``_id`` of a JWT code: HMAC of its signing key id and ``jti``."""
    return hmac.new(pepper, _JTI + kid.encode() + b"\x00" + jti.encode(), hashlib.sha256).digest()


def source_key(pepper: bytes, source: str) -> bytes:
    """The stored id of a request source (an IP address is personal data: never stored in clear)."""
    return hmac.new(pepper, _SOURCE + source.encode(), hashlib.sha256).digest()[:16]


def report_id(pepper: bytes, key: bytes) -> str:
    """The report id of a code: stable across retries of one upload, reveals nothing of the code."""
    return hmac.new(pepper, _REPORT + key, hashlib.sha256).hexdigest()[:32]


def token_hash(token: str) -> str:
    """Stored form of an issuer's bearer token (256 random bits: a plain SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()
