"""Request validation of the phone API, in one place (PROTOCOL.md sections 5 and 6).

Every function here either returns clean, typed values or raises :class:`ApiError` (400, 413 or 415)
with a short message naming the field, never its value.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import StreamReader, web

from robert_server.api.errors import ApiError, bad_request
from robert_server.contacts import Contact, Hello, pack_contact

# Body limits per endpoint (bytes). /report's comes from the settings.
SMALL_BODY = 8 * 1024  # authenticated requests, captcha creation
REGISTER_BODY = 16 * 1024  # public key + captcha + pushInfo

MAX_EPOCH_ID = 2**24 - 1  # epochId_24 is the low 3 bytes of the epoch (PROTOCOL.md 3)
UINT32_MAX = 2**32 - 1


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The request's JSON object: 415 unless ``application/json``, 413 over ``limit``, 400 if malformed."""
    check_body_headers(request, limit)
    return json_object(await read_body(request.content, limit))


def check_body_headers(request: web.Request, limit: int) -> None:
    """415 unless ``application/json``, 413 when the announced length is over ``limit``."""
    if request.content_type != "application/json":
        raise ApiError(415, "content type must be application/json")
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "request body too large")


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("malformed JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


async def read_body(content: StreamReader, limit: int) -> bytes:
    """The raw body, 413 as soon as it is over ``limit``."""
    if content.is_eof():  # the usual small body, already all received: take it without awaiting
        raw = content.read_nowait()
        if len(raw) > limit:
            raise ApiError(413, "request body too large")
        return raw
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def string(body: dict[str, Any], name: str, *, max_len: int = 4096, required: bool = True) -> str | None:
    """A non-empty string field (``None`` if absent and not required)."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"missing field {name}")
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise bad_request(f"invalid field {name}")
    return value


def integer(body: dict[str, Any], name: str, lo: int, hi: int) -> int:
    """A required JSON integer (booleans and floats refused) in [lo, hi]."""
    value = body.get(name)
    if value is None:
        raise bad_request(f"missing field {name}")
    if type(value) is not int or not lo <= value <= hi:
        raise bad_request(f"invalid field {name}")
    return value


def boolean(body: dict[str, Any], name: str, default: bool = False) -> bool:
    """An optional JSON boolean (absent or null: ``default``)."""
    value = body.get(name)
    if value is None:
        return default
    if type(value) is not bool:
        raise bad_request(f"invalid field {name}")
    return value


def padding(body: dict[str, Any]) -> None:
    """An optional ``padding`` string, ignored: apps pad request bodies to a few sizes (README)."""
    if not isinstance(body.get("padding", ""), str):
        raise bad_request("invalid field padding")


def b64_bytes(body: dict[str, Any], name: str, length: int | None = None, *, max_len: int = 4096) -> bytes:
    """A required standard-base64 field (with padding) decoding to exactly ``length`` bytes if given."""
    value = string(body, name, max_len=max_len)
    assert value is not None
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)  # = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"invalid base64 in field {name}") from None
    if length is not None and len(raw) != length:
        raise bad_request(f"wrong length of field {name}")
    return raw


@dataclass(frozen=True, slots=True)
class AuthFields:
    """The fields of an authenticated request (PROTOCOL.md 5)."""

    ebid: bytes  # 8
    epoch_id: int
    time: bytes  # 4: NTP seconds, uint32 BE
    mac: bytes  # 32

    @property
    def ntp_time(self) -> int:
        return int.from_bytes(self.time, "big")


def auth_fields(body: dict[str, Any]) -> AuthFields:
    return AuthFields(
        ebid=b64_bytes(body, "ebid", 8, max_len=12),
        epoch_id=integer(body, "epochId", 0, MAX_EPOCH_ID),
        time=b64_bytes(body, "time", 4, max_len=8),
        mac=b64_bytes(body, "mac", 32, max_len=44),
    )


def push_info(body: dict[str, Any]) -> dict[str, str] | None:
    """Optional ``pushInfo {token, locale, timezone}`` (all three required when present)."""
    value = body.get("pushInfo")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("invalid field pushInfo")
    out: dict[str, str] = {}
    for name, max_len in (("token", 4096), ("locale", 64), ("timezone", 64)):
        v = value.get(name)
        if not isinstance(v, str) or not v or len(v) > max_len:
            raise bad_request(f"invalid field pushInfo.{name}")
        out[name] = v
    return out


def _hello(item: Any) -> Hello:
    if not isinstance(item, dict):
        raise bad_request("invalid HELLO in contacts")
    return Hello(
        time_collected=integer(item, "timeCollectedOnDevice", 0, UINT32_MAX),
        time_from_hello=integer(item, "timeFromHelloMessage", 0, 0xFFFF),
        mac=b64_bytes(item, "mac", 5, max_len=8),
        rssi=integer(item, "rssiCalibrated", -127, 0),
    )


def _contact(item: Any) -> Contact:
    if not isinstance(item, dict):
        raise bad_request("invalid contact")
    ids = item.get("ids")
    if not isinstance(ids, list) or not ids:
        raise bad_request("invalid field ids of a contact")
    return Contact(
        ebid=b64_bytes(item, "ebid", 8, max_len=12),
        ecc=b64_bytes(item, "ecc", 1, max_len=4),
        hellos=[_hello(h) for h in ids],
    )


@dataclass(frozen=True, slots=True)
class ParsedReport:
    """A valid /report body: the code, and the contacts packed as stored (contacts.pack_contact)."""

    token: str
    packed: list[dict[str, Any]]
    hellos: int
    dummy: bool  # a fake upload (api/report.py)


MAX_TOKEN = 2048  # a JWT code is a few hundred characters


def parse_report(raw: bytes) -> ParsedReport:
    """The /report body (400 with the first problem): may run in a worker process (api/uploads.py)."""
    body = json_object(raw)
    items = contacts(body)  # null contacts: 400 before the code is looked at, as deployed
    token = string(body, "token", max_len=MAX_TOKEN)
    assert token is not None
    padding(body)
    dummy = boolean(body, "dummy")
    return ParsedReport(token, [pack_contact(c) for c in items], sum(len(c.hellos) for c in items), dummy)


def contacts(body: dict[str, Any]) -> list[Contact]:
    """``contacts``: a list (may be empty, never null) of Contact (PROTOCOL.md 6)."""
    value = body.get("contacts")
    if value is None:
        raise bad_request("contacts may be empty but not null")
    if not isinstance(value, list):
        raise bad_request("invalid field contacts")
    return [_contact(c) for c in value]
