"""The MACs of HELLO messages (PROTOCOL.md section 4) and of authenticated requests (section 5).

HELLO MAC = HMAC-SHA256(K_A,mac, 0x01 | ECC | EBID | Time)[0:5]; request MAC = HMAC-SHA256(K_A,mac,
salt | EBID | epochId (4 bytes BE) | time). Checks are constant-time; a MAC of another length is invalid, a
malformed field raises :class:`ProtocolError` naming it.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from crypto_backend.protocol import _pure
from crypto_backend.protocol import backend as _backend
from crypto_backend.protocol._checks import BYTES_LIKE, check_bytes, check_uint
from crypto_backend.protocol.constants import (
    CLIENT_KEY_SIZE,
    EBID_SIZE,
    ECC_SIZE,
    HELLO_MAC_SIZE,
    HELLO_TIME_SIZE,
    REQUEST_SALTS,
    REQUEST_TIME_SIZE,
    SALT_HELLO,
)
from crypto_backend.protocol.errors import ProtocolError

_HELLO_PREFIX = bytes([SALT_HELLO])


def _time16(time16: bytes | int) -> bytes:
    if isinstance(time16, int) and not isinstance(time16, bool):
        return (time16 & 0xFFFF).to_bytes(HELLO_TIME_SIZE, "big")
    return check_bytes(time16, HELLO_TIME_SIZE, "HELLO time")


def _checked_hello(k_mac: object, ecc: object, ebid: object, time16: bytes | int) -> tuple[bytes, ...]:
    """The HELLO fields as bytes, or the ProtocolError that says which one is wrong."""
    return (
        check_bytes(k_mac, CLIENT_KEY_SIZE, "K_A,mac"),
        check_bytes(ecc, ECC_SIZE, "ECC"),
        check_bytes(ebid, EBID_SIZE, "EBID"),
        _time16(time16),
    )


def hello_mac(k_mac: bytes, ecc: bytes, ebid: bytes, time16: bytes | int) -> bytes:
    """HELLO MAC = HMAC-SHA256(K_A,mac, 0x01 | ECC | EBID | Time)[0:5] (section 4).

    ``time16`` is the 2-byte field or an int whose low 16 bits are taken.
    """
    t = time16 if type(time16) is bytes else _time16(time16)
    try:
        return _backend.hello_mac(k_mac, ecc, ebid, t)
    except (ValueError, TypeError):
        pass  # say which field is wrong, below
    return _pure.hello_mac(*_checked_hello(k_mac, ecc, ebid, t))


def verify_hello_mac(k_mac: bytes, ecc: bytes, ebid: bytes, time16: bytes | int, mac: bytes) -> bool:
    """Check a HELLO MAC in constant time (sections 4 and 8 step 3). A MAC of another length is invalid."""
    t = time16 if type(time16) is bytes else _time16(time16)
    try:
        return _backend.verify_hello_mac(k_mac, ecc, ebid, t, mac)
    except (ValueError, TypeError):
        pass  # a bad field raises ProtocolError below; a MAC that is not bytes is just invalid
    expected = hello_mac(k_mac, ecc, ebid, t)
    return isinstance(mac, BYTES_LIKE) and hmac.compare_digest(expected, bytes(mac))


def verify_hello_macs(
    k_mac: bytes, ecc: bytes, ebid: bytes, times16: Sequence[bytes | int], macs: Sequence[bytes]
) -> list[bool]:
    """Check the MACs of many HELLOs of one contact (one ECC, one EBID), one bool each (section 8 step 3).

    ``times16`` items are 2-byte fields or ints (low 16 bits); a MAC that is not 5 bytes is invalid.
    """
    if len(times16) != len(macs):
        raise ProtocolError("times and MACs differ in number")
    k_mac = check_bytes(k_mac, CLIENT_KEY_SIZE, "K_A,mac")
    head = check_bytes(ecc, ECC_SIZE, "ECC") + check_bytes(ebid, EBID_SIZE, "EBID")
    try:
        return _backend.verify_hello_macs(k_mac, head, times16, macs)
    except (ValueError, TypeError):
        pass  # a bad time: the path below says so
    prefix = _HELLO_PREFIX + head
    return [
        isinstance(mac, bytes)
        and hmac.compare_digest(hmac.digest(k_mac, prefix + _time16(t), "sha256")[:HELLO_MAC_SIZE], mac)
        for t, mac in zip(times16, macs, strict=True)
    ]


def _time32(time32: bytes | int) -> bytes:
    if isinstance(time32, int) and not isinstance(time32, bool):
        return check_uint(time32, 1 << 32, "request time").to_bytes(REQUEST_TIME_SIZE, "big")
    return check_bytes(time32, REQUEST_TIME_SIZE, "request time")


def request_mac(k_mac: bytes, salt: int, ebid: bytes, epoch_id: int, time32: bytes | int) -> bytes:
    """MAC = HMAC-SHA256(K_A,mac, salt | EBID | epochId (4 bytes BE) | time) (section 5).

    ``salt`` is one of SALT_STATUS, SALT_UNREGISTER, SALT_DELETE_HISTORY; ``time32`` the 4-byte field
    (NTP seconds, BE) or that number.
    """
    if salt not in REQUEST_SALTS:
        raise ProtocolError("unknown request salt")
    msg = (
        bytes([salt])
        + check_bytes(ebid, EBID_SIZE, "EBID")
        + check_uint(epoch_id, 1 << 32, "epoch id").to_bytes(4, "big")
        + _time32(time32)
    )
    return _backend.hmac_sha256(check_bytes(k_mac, CLIENT_KEY_SIZE, "K_A,mac"), msg)


def verify_request_mac(
    k_mac: bytes, salt: int, ebid: bytes, epoch_id: int, time32: bytes | int, mac: bytes
) -> bool:
    """Check a request MAC in constant time (section 5). A MAC of another length is invalid."""
    expected = request_mac(k_mac, salt, ebid, epoch_id, time32)
    return isinstance(mac, bytes) and hmac.compare_digest(expected, mac)
