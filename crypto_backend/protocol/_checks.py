"""Input checks shared by the protocol operations: each returns the value as ``bytes``/``int`` or raises
:class:`ProtocolError` naming the field (never its value)."""

from __future__ import annotations

from crypto_backend.protocol.errors import ProtocolError

BYTES_LIKE = (bytes, bytearray, memoryview)


def check_bytes(value: object, size: int, name: str) -> bytes:
    if type(value) is bytes and len(value) == size:
        return value  # the common case, first
    if not isinstance(value, BYTES_LIKE):
        raise ProtocolError(f"{name} must be bytes")
    if len(value) != size:
        raise ProtocolError(f"{name} must be {size} bytes")
    return bytes(value)


def check_packed(value: object, size: int, name: str) -> bytes:
    if type(value) is bytes and not len(value) % size:
        return value
    if not isinstance(value, BYTES_LIKE):
        raise ProtocolError(f"{name} must be bytes")
    if len(value) % size:
        raise ProtocolError(f"{name} must be a whole number of {size}-byte items")
    return bytes(value)


def check_uint(value: object, limit: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise ProtocolError(f"{name} out of range")
    return value


def check_cc(cc: object) -> int:
    return check_uint(cc, 256, "country code")
