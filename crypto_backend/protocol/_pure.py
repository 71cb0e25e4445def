"""The pure-Python kernels of :data:`~crypto_backend.protocol.backend.PURE_BACKEND`.

Each function has the signature and the contract of its namesake in the native extension (``_skinny.pyi``,
``_skinny.c``): same bytes out, ``ValueError``/``TypeError`` on input it cannot take. The SKINNY cipher of
this backend is the reference one (``skinny.py``). Slow; used when the extension is not built, and by the
tests that run every vector on both backends.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence

from crypto_backend.protocol.constants import HELLO_MAC_SIZE, SALT_HELLO

_HELLO_PREFIX = bytes([SALT_HELLO])
_ZERO_PAD = bytes(8)


def _buffer(value: object) -> bytes:
    """The bytes of a buffer; ``TypeError`` for anything else (an int is not ``bytes(n)`` zeros here)."""
    return memoryview(value).tobytes()  # type: ignore[arg-type]


def pad16(ebids: bytes) -> bytes:
    """Each 8-byte block followed by 8 zero bytes (the AES input of the ECCs, PROTOCOL.md section 3)."""
    data = _buffer(ebids)
    if len(data) % 8:
        raise ValueError("data must be a whole number of 8-byte blocks")
    return b"".join(data[i : i + 8] + _ZERO_PAD for i in range(0, len(data), 8))


def tuples_json(first_epoch: int, ebids: bytes, eccs: bytes) -> bytes:
    """The compact tuples JSON of consecutive epochs (PROTOCOL.md section 3)."""
    ebids, eccs = _buffer(ebids), _buffer(eccs)
    if len(ebids) != 8 * len(eccs):
        raise ValueError("EBIDs and ECCs differ in number")
    b64 = base64.b64encode
    entries = (
        b'{"epochId":%d,"key":{"ebid":"%s","ecc":"%s"}}'
        % (first_epoch + i, b64(ebids[8 * i : 8 * i + 8]), b64(eccs[i : i + 1]))
        for i in range(len(eccs))
    )
    return b"[" + b",".join(entries) + b"]"


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 from the standard library."""
    return hmac.digest(_buffer(key), _buffer(msg), "sha256")


def hello_mac(k_mac: bytes, ecc: bytes, ebid: bytes, time16: bytes) -> bytes:
    """HMAC-SHA256(K_A,mac, 0x01 | ECC | EBID | Time)[0:5] (PROTOCOL.md section 4)."""
    k_mac, ecc, ebid, time16 = _buffer(k_mac), _buffer(ecc), _buffer(ebid), _buffer(time16)
    if (len(k_mac), len(ecc), len(ebid), len(time16)) != (32, 1, 8, 2):
        raise ValueError("bad HELLO field sizes")
    return hmac.digest(k_mac, _HELLO_PREFIX + ecc + ebid + time16, "sha256")[:HELLO_MAC_SIZE]


def verify_hello_mac(k_mac: bytes, ecc: bytes, ebid: bytes, time16: bytes, mac: bytes) -> bool:
    """Constant-time check of one HELLO MAC; a MAC of another length is invalid."""
    expected = hello_mac(k_mac, ecc, ebid, time16)
    return hmac.compare_digest(expected, _buffer(mac))


def _time16(t: object) -> bytes:
    if type(t) is int:
        return (t & 0xFFFF).to_bytes(2, "big")
    if type(t) is bytes and len(t) == 2:
        return t
    raise TypeError("HELLO time must be an int or 2 bytes")


def verify_hello_macs(
    k_mac: bytes, ecc_ebid: bytes, times16: Sequence[bytes | int], macs: Sequence[bytes]
) -> list[bool]:
    """One verdict per HELLO of one contact; a MAC that is not 5 bytes is invalid, a bad time raises."""
    k_mac, head = _buffer(k_mac), _buffer(ecc_ebid)
    if len(k_mac) > 64 or len(head) != 9:
        raise ValueError("bad K_A,mac or ECC|EBID size")
    if not isinstance(times16, Sequence) or not isinstance(macs, Sequence):
        raise TypeError("HELLO times and MACs must be sequences")
    if len(times16) != len(macs):
        raise ValueError("HELLO times and MACs differ in number")
    prefix = _HELLO_PREFIX + head
    checks = [(_time16(t), m) for t, m in zip(times16, macs, strict=True)]
    return [
        type(m) is bytes
        and len(m) == HELLO_MAC_SIZE
        and hmac.compare_digest(hmac.digest(k_mac, prefix + t, "sha256")[:HELLO_MAC_SIZE], m)
        for t, m in checks
    ]
