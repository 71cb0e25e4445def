"""Code formats, generation and validity (PROTOCOL.md 7).

Three kinds of code unlock ``/report``: a *short* code (6 characters ``[A-Z0-9]``, doctors through
ProStopCovid), a *long* code (a lowercase UUIDv4, printed by SI-DEP as a QR code) and a *JWT* code
(an ES256 JWS signed by SI-DEP). Codes come from the operating system's CSPRNG (``secrets``).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
import zoneinfo
from urllib.parse import quote

SHORT = "short"
LONG = "long"
JWT = "jwt"
KINDS = (SHORT, LONG, JWT)

SHORT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SHORT_LENGTH = 6
QR_TYPE = {LONG: 1, SHORT: 2}  # the ``type`` parameter of a QR payload

_SHORT_RE = re.compile(r"[A-Z0-9]{6}")
_LONG_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_JWT_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
MAX_CODE_LENGTH = 4096  # a JWT code is a few hundred characters; anything longer is refused unread


def generate_short() -> str:
    """A fresh short code: 6 characters drawn uniformly from [A-Z0-9]."""
    return "".join(secrets.choice(SHORT_ALPHABET) for _ in range(SHORT_LENGTH))


def generate_long() -> str:
    """A fresh long code: a random UUIDv4 in lower case (``uuid4`` reads ``os.urandom``)."""
    return str(uuid.uuid4())


def normalise(code: str) -> tuple[str, str] | None:
    """``(kind, normalised code)`` of a code as typed or scanned, or None if it has no known format.

    Short codes accept lower case (they are read aloud and typed); long codes are compared in lower case.
    """
    if not isinstance(code, str) or len(code) > MAX_CODE_LENGTH:
        return None
    text = code.strip()
    if len(text) == SHORT_LENGTH and _SHORT_RE.fullmatch(text.upper()):
        return SHORT, text.upper()
    if len(text) == 36 and _LONG_RE.fullmatch(text.lower()):
        return LONG, text.lower()
    if _JWT_RE.fullmatch(text):
        return JWT, text
    return None


def short_validity(now: dt.datetime, minutes: int) -> tuple[dt.datetime, dt.datetime]:
    """A short code is valid from its issue for ``minutes`` (60 by default)."""
    return now, now + dt.timedelta(minutes=minutes)


def long_validity(day: dt.date, days: int, zone: str) -> tuple[dt.datetime, dt.datetime]:
    """A long code for day D is valid from 00:00 on D to the end of D+``days``, local time of ``zone``."""
    tz = zoneinfo.ZoneInfo(zone)
    start = dt.datetime.combine(day, dt.time(0), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=days + 1), dt.time(0), tzinfo=tz)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def jwt_validity(iat: int, days: int, skew: int = 0) -> tuple[dt.datetime, dt.datetime]:
    """A JWT code is valid for ``days`` (10) after its ``iat`` (from ``skew`` seconds before it)."""
    start = dt.datetime.fromtimestamp(iat, tz=dt.UTC)
    return start - dt.timedelta(seconds=skew), start + dt.timedelta(days=days)


def qr_payload(app_link_base: str, code: str, kind: str) -> str:
    """The deep link a QR code carries: ``<app link base>?code=<code>&type=<1 long | 2 short>``."""
    sep = "&" if "?" in app_link_base else "?"
    return f"{app_link_base}{sep}code={quote(code, safe='-')}&type={QR_TYPE[kind]}"
