"""The ROBERT protocol operations, bytes in and bytes out (PROTOCOL.md sections 2 to 5).

One small function per protocol operation, named after it. Hot paths have bulk forms over *packed*
bytes (``n * 8`` bytes of EBIDs, ``n`` bytes of ECCs) so that the native SKINNY-64-192 cipher
(``_skinny.c``) and one AES call can do a whole bundle or a whole batch of contacts at once.

Every bad input raises :class:`ProtocolError` (a ``ValueError``) with a short message that never holds
key bytes, EBIDs, MACs or ``id_A``.

Day keys: the day of an epoch is ``epoch_id // EPOCHS_PER_DAY`` counted from ``timeStart`` (which is a UTC
midnight, PROTOCOL.md section 1). :func:`build_bundle` takes the day keys as a mapping or a function
``day_index -> K_S`` with that day index.
"""

from __future__ import annotations

import base64
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Protocol

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto_backend.protocol import skinny as _reference

try:
    from crypto_backend.protocol import _skinny as _native

    NATIVE = hasattr(_native, "Key")
except ImportError:  # extension not built: the reference cipher keeps everything working, slowly
    _native = None  # type: ignore[assignment]
    NATIVE = False

__all__ = [
    "EBID_SIZE",
    "ECC_SIZE",
    "EPOCHS_PER_DAY",
    "NATIVE",
    "ProtocolError",
    "NoDayKeyError",
    "SkinnyKey",
    "skinny_key",
    "encrypt_ebid",
    "decrypt_ebid",
    "encrypt_ebids",
    "decrypt_ebids",
    "encrypt_ebids_packed",
    "decrypt_ebids_packed",
    "country_code",
    "encrypt_country_code",
    "encrypt_country_codes",
    "country_codes",
    "hello_mac",
    "verify_hello_mac",
    "verify_hello_macs",
    "request_mac",
    "verify_request_mac",
    "derive_client_keys",
    "seal_tuples",
    "open_tuples",
    "tuples_json",
    "bundle_epochs",
    "build_bundle",
    "seal_bundle",
]

# --- Protocol constants (PROTOCOL.md) --------------------------------------------------------------

EPOCHS_PER_DAY = 96  # section 1
K_S_SIZE = 24  # section 2: SKINNY-64-192 key of one day
K_G_SIZE = 32  # section 2: AES-256 federation key
CLIENT_KEY_SIZE = 32  # section 2: K_A,mac and K_A,tuples
ID_A_SIZE = 5  # section 2
EBID_SIZE = 8  # section 3
EPOCH_ID_24_SIZE = 3  # section 3: epochId_24, big-endian
ECC_SIZE = 1  # section 3
COUNTRY_CODE_FRANCE = 0x21  # section 3
IV_SIZE = 12  # section 3: tuples sealing
GCM_TAG_SIZE = 16
HELLO_TIME_SIZE = 2  # section 4
HELLO_MAC_SIZE = 5  # section 4
REQUEST_TIME_SIZE = 4  # section 5
REQUEST_MAC_SIZE = 32  # section 5

# Domain separation: the first byte of every HMAC message (sections 4 and 5).
SALT_HELLO = 0x01
SALT_STATUS = 0x02
SALT_UNREGISTER = 0x03
SALT_DELETE_HISTORY = 0x04
REQUEST_SALTS = (SALT_STATUS, SALT_UNREGISTER, SALT_DELETE_HISTORY)

# Derivation labels of the per-phone keys (section 2).
LABEL_MAC = b"mac"
LABEL_TUPLES = b"tuples"

_ZERO_PAD = bytes(8)  # ECC: the EBID is padded to one AES block with zeros (section 3)
_HELLO_PREFIX = bytes([SALT_HELLO])


class ProtocolError(ValueError):
    """A protocol input has the wrong type, length or value, or does not authenticate."""


class NoDayKeyError(ProtocolError):
    """No ``K_S`` for the day of an epoch."""


# --- Input checks ----------------------------------------------------------------------------------


_BYTES_LIKE = (bytes, bytearray, memoryview)


def _check_bytes(value: object, size: int, name: str) -> bytes:
    if type(value) is bytes and len(value) == size:
        return value  # the common case, first
    if not isinstance(value, _BYTES_LIKE):
        raise ProtocolError(f"{name} must be bytes")
    if len(value) != size:
        raise ProtocolError(f"{name} must be {size} bytes")
    return bytes(value)


def _check_packed(value: object, size: int, name: str) -> bytes:
    if type(value) is bytes and not len(value) % size:
        return value
    if not isinstance(value, _BYTES_LIKE):
        raise ProtocolError(f"{name} must be bytes")
    if len(value) % size:
        raise ProtocolError(f"{name} must be a whole number of {size}-byte items")
    return bytes(value)


def _check_uint(value: object, limit: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise ProtocolError(f"{name} out of range")
    return value


def _check_cc(cc: object) -> int:
    return _check_uint(cc, 256, "country code")


# --- SKINNY-64-192 keys (section 3) ------------------------------------------------------------------


class SkinnyKeyLike(Protocol):
    """A SKINNY-64-192 key with its round tweakeys: bulk operations over packed 8-byte blocks."""

    def encrypt(self, blocks: bytes, /) -> bytes: ...
    def decrypt(self, blocks: bytes, /) -> bytes: ...
    def encrypt_epochs(self, first_epoch: int, count: int, id_a: bytes, /) -> bytes: ...


SkinnyKey: Callable[[bytes], SkinnyKeyLike] = _native.Key if NATIVE else _reference.Key


@lru_cache(maxsize=64)
def _cached_skinny_key(k_s: bytes) -> SkinnyKeyLike:
    return SkinnyKey(k_s)


def skinny_key(k_s: bytes) -> SkinnyKeyLike:
    """The SKINNY-64-192 key of one day with its round tweakeys, computed once per ``K_S`` (cached)."""
    return _cached_skinny_key(_check_bytes(k_s, K_S_SIZE, "K_S"))


# --- EBIDs (section 3) -----------------------------------------------------------------------------


def encrypt_ebid(k_s: bytes, epoch_id: int, id_a: bytes) -> bytes:
    """EBID = SKINNY-64-192-Encrypt(K_S, epochId_24 | id_A) (section 3)."""
    return encrypt_ebids_packed(k_s, epoch_id, 1, id_a)


def decrypt_ebid(k_s: bytes, ebid: bytes) -> tuple[int, bytes]:
    """Decrypt an EBID into ``(epochId_24, id_A)`` (section 3)."""
    block = skinny_key(k_s).decrypt(_check_bytes(ebid, EBID_SIZE, "EBID"))
    return int.from_bytes(block[:EPOCH_ID_24_SIZE], "big"), block[EPOCH_ID_24_SIZE:]


def encrypt_ebids(k_s: bytes, epoch_ids: Sequence[int], id_a: bytes) -> list[bytes]:
    """EBIDs of one ``id_A`` for any epochs, all under one day key (section 3)."""
    id_a = _check_bytes(id_a, ID_A_SIZE, "id_A")
    blocks = b"".join(
        (_check_uint(e, 1 << 32, "epoch id") & 0xFFFFFF).to_bytes(3, "big") + id_a for e in epoch_ids
    )
    packed = skinny_key(k_s).encrypt(blocks)
    return [packed[i : i + EBID_SIZE] for i in range(0, len(packed), EBID_SIZE)]


def decrypt_ebids(k_s: bytes, ebids: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """Decrypt many EBIDs under one day key into ``(epochId_24, id_A)`` pairs (section 3)."""
    packed = b"".join(_check_bytes(e, EBID_SIZE, "EBID") for e in ebids)
    plain = decrypt_ebids_packed(k_s, packed)
    return [(int.from_bytes(plain[i : i + 3], "big"), plain[i + 3 : i + 8]) for i in range(0, len(plain), 8)]


def encrypt_ebids_packed(k_s: bytes, first_epoch: int, count: int, id_a: bytes) -> bytes:
    """``count`` EBIDs of one ``id_A`` for consecutive epochs from ``first_epoch``, packed (section 3)."""
    _check_uint(first_epoch, 1 << 32, "epoch id")
    _check_uint(count, 1 << 20, "epoch count")
    return skinny_key(k_s).encrypt_epochs(first_epoch, count, _check_bytes(id_a, ID_A_SIZE, "id_A"))


def decrypt_ebids_packed(k_s: bytes, ebids: bytes) -> bytes:
    """Decrypt packed EBIDs: ``n * 8`` bytes of ``epochId_24 (BE) | id_A`` blocks (section 3)."""
    return skinny_key(k_s).decrypt(_check_packed(ebids, EBID_SIZE, "EBIDs"))


# --- Country code (section 3) ----------------------------------------------------------------------


@lru_cache(maxsize=8)
def _aes_ecb(k_g: bytes) -> Cipher:
    return Cipher(algorithms.AES(k_g), modes.ECB())  # noqa: S305 - ECB on one block is the protocol


def _country_masks(k_g: bytes, ebids: bytes) -> bytes:
    """First byte of AES-256-ECB(K_G, EBID | 0x00*8) for each packed EBID."""
    k_g = _check_bytes(k_g, K_G_SIZE, "K_G")
    if not ebids:
        return b""
    if NATIVE:
        out = _aes_ecb(k_g).encryptor().update(_native.pad16(ebids))
        return out[::16]
    out = (
        _aes_ecb(k_g)
        .encryptor()
        .update(b"".join(ebids[i : i + 8] + _ZERO_PAD for i in range(0, len(ebids), 8)))
    )
    return out[::16]


@lru_cache(maxsize=256)
def _xor_table(value: int) -> bytes:
    return bytes(i ^ value for i in range(256))


def _xor_all(data: bytes, value: int) -> bytes:
    return data.translate(_xor_table(value))


def encrypt_country_code(k_g: bytes, ebid: bytes, cc: int) -> bytes:
    """ECC = AES-256-ECB(K_G, EBID | 0x00*8)[0] XOR CC, one byte (section 3)."""
    return encrypt_country_codes(k_g, _check_bytes(ebid, EBID_SIZE, "EBID"), cc)


def country_code(k_g: bytes, ebid: bytes, ecc: bytes) -> int:
    """Recover CC from an ECC: the same operation as encrypting (section 3)."""
    return country_codes(k_g, _check_bytes(ebid, EBID_SIZE, "EBID"), _check_bytes(ecc, ECC_SIZE, "ECC"))[0]


def encrypt_country_codes(k_g: bytes, ebids_packed: bytes, cc: int) -> bytes:
    """One ECC per packed EBID, all for country ``cc``, in one AES-ECB call (section 3)."""
    masks = _country_masks(k_g, _check_packed(ebids_packed, EBID_SIZE, "EBIDs"))
    return _xor_all(masks, _check_cc(cc))


def country_codes(k_g: bytes, ebids_packed: bytes, eccs: bytes) -> bytes:
    """The country code (one byte each) of packed EBIDs and their ECCs (section 3, section 8 step 1)."""
    ebids_packed = _check_packed(ebids_packed, EBID_SIZE, "EBIDs")
    eccs = _check_bytes(eccs, len(ebids_packed) // EBID_SIZE, "ECCs")
    masks = _country_masks(k_g, ebids_packed)
    return (int.from_bytes(masks, "big") ^ int.from_bytes(eccs, "big")).to_bytes(len(eccs), "big")


# --- HELLO MAC (section 4) -------------------------------------------------------------------------


def _hmac_sha256_reference(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


# HMAC-SHA256 of one-block messages: native (SHA-NI when the CPU has it) or the standard library.
_hmac_sha256: Callable[[bytes, bytes], bytes] = _native.hmac_sha256 if NATIVE else _hmac_sha256_reference


def _time16(time16: bytes | int) -> bytes:
    if isinstance(time16, int) and not isinstance(time16, bool):
        return (time16 & 0xFFFF).to_bytes(2, "big")
    return _check_bytes(time16, HELLO_TIME_SIZE, "HELLO time")


def _hello_mac_reference(k_mac: bytes, ecc: bytes, ebid: bytes, time16: bytes) -> bytes:
    return hmac.digest(k_mac, _HELLO_PREFIX + ecc + ebid + time16, "sha256")[:HELLO_MAC_SIZE]


def _checked_hello(k_mac: object, ecc: object, ebid: object, time16: bytes | int) -> tuple[bytes, ...]:
    """The HELLO fields as bytes, or the ProtocolError that says which one is wrong."""
    return (
        _check_bytes(k_mac, CLIENT_KEY_SIZE, "K_A,mac"),
        _check_bytes(ecc, ECC_SIZE, "ECC"),
        _check_bytes(ebid, EBID_SIZE, "EBID"),
        _time16(time16),
    )


def hello_mac(k_mac: bytes, ecc: bytes, ebid: bytes, time16: bytes | int) -> bytes:
    """HELLO MAC = HMAC-SHA256(K_A,mac, 0x01 | ECC | EBID | Time)[0:5] (section 4).

    ``time16`` is the 2-byte field or an int whose low 16 bits are taken.
    """
    t = time16 if type(time16) is bytes else _time16(time16)
    if NATIVE:
        try:
            return _native.hello_mac(k_mac, ecc, ebid, t)
        except (ValueError, TypeError):
            pass  # say which field is wrong, below
    return _hello_mac_reference(*_checked_hello(k_mac, ecc, ebid, t))


def verify_hello_mac(k_mac: bytes, ecc: bytes, ebid: bytes, time16: bytes | int, mac: bytes) -> bool:
    """Check a HELLO MAC in constant time (sections 4 and 8 step 3). A MAC of another length is invalid."""
    t = time16 if type(time16) is bytes else _time16(time16)
    if NATIVE:
        try:
            return _native.verify_hello_mac(k_mac, ecc, ebid, t, mac)
        except (ValueError, TypeError):
            pass  # a bad field raises ProtocolError below; a MAC that is not bytes is just invalid
    expected = hello_mac(k_mac, ecc, ebid, t)
    return isinstance(mac, _BYTES_LIKE) and hmac.compare_digest(expected, bytes(mac))


def verify_hello_macs(
    k_mac: bytes, ecc: bytes, ebid: bytes, times16: Sequence[bytes | int], macs: Sequence[bytes]
) -> list[bool]:
    """Check the MACs of many HELLOs of one contact (one ECC, one EBID), one bool each (section 8 step 3).

    ``times16`` items are 2-byte fields or ints (low 16 bits); a MAC that is not 5 bytes is invalid.
    """
    if len(times16) != len(macs):
        raise ProtocolError("times and MACs differ in number")
    k_mac = _check_bytes(k_mac, CLIENT_KEY_SIZE, "K_A,mac")
    head = _check_bytes(ecc, ECC_SIZE, "ECC") + _check_bytes(ebid, EBID_SIZE, "EBID")
    if NATIVE:
        try:
            return _native.verify_hello_macs(k_mac, head, times16, macs)
        except (ValueError, TypeError):
            pass  # a bad time: the path below says so
    prefix = _HELLO_PREFIX + head
    return [
        isinstance(mac, bytes)
        and hmac.compare_digest(hmac.digest(k_mac, prefix + _time16(t), "sha256")[:HELLO_MAC_SIZE], mac)
        for t, mac in zip(times16, macs, strict=True)
    ]


# --- Authenticated requests (section 5) ------------------------------------------------------------


def _time32(time32: bytes | int) -> bytes:
    if isinstance(time32, int) and not isinstance(time32, bool):
        return _check_uint(time32, 1 << 32, "request time").to_bytes(4, "big")
    return _check_bytes(time32, REQUEST_TIME_SIZE, "request time")


def request_mac(k_mac: bytes, salt: int, ebid: bytes, epoch_id: int, time32: bytes | int) -> bytes:
    """MAC = HMAC-SHA256(K_A,mac, salt | EBID | epochId (4 bytes BE) | time) (section 5).

    ``salt`` is one of SALT_STATUS, SALT_UNREGISTER, SALT_DELETE_HISTORY; ``time32`` the 4-byte field
    (NTP seconds, BE) or that number.
    """
    if salt not in REQUEST_SALTS:
        raise ProtocolError("unknown request salt")
    msg = (
        bytes([salt])
        + _check_bytes(ebid, EBID_SIZE, "EBID")
        + _check_uint(epoch_id, 1 << 32, "epoch id").to_bytes(4, "big")
        + _time32(time32)
    )
    return _hmac_sha256(_check_bytes(k_mac, CLIENT_KEY_SIZE, "K_A,mac"), msg)


def verify_request_mac(
    k_mac: bytes, salt: int, ebid: bytes, epoch_id: int, time32: bytes | int, mac: bytes
) -> bool:
    """Check a request MAC in constant time (section 5). A MAC of another length is invalid."""
    expected = request_mac(k_mac, salt, ebid, epoch_id, time32)
    return isinstance(mac, bytes) and hmac.compare_digest(expected, mac)


# --- Registration keys (section 2) -----------------------------------------------------------------


def derive_client_keys(
    server_private_key: ec.EllipticCurvePrivateKey, client_public_spki: bytes
) -> tuple[bytes, bytes]:
    """``(K_A,mac, K_A,tuples)`` from ECDH(server private, phone public) (section 2).

    ``client_public_spki`` is the DER SubjectPublicKeyInfo the phone sends (after base64 decoding).
    Anything but a valid P-256 public key raises :class:`ProtocolError`.
    """
    if not isinstance(server_private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        server_private_key.curve, ec.SECP256R1
    ):
        raise ProtocolError("server key is not a P-256 private key")
    if not isinstance(client_public_spki, _BYTES_LIKE):
        raise ProtocolError("client public key must be bytes")
    try:
        public = serialization.load_der_public_key(bytes(client_public_spki))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ProtocolError("client public key is not a valid P-256 SubjectPublicKeyInfo") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise ProtocolError("client public key is not a P-256 key")
    try:
        secret = server_private_key.exchange(ec.ECDH(), public)
    except ValueError:
        raise ProtocolError("client public key is not a valid P-256 point") from None
    return (
        hmac.digest(secret, LABEL_MAC, "sha256"),
        hmac.digest(secret, LABEL_TUPLES, "sha256"),
    )


# --- Tuples (section 3) ----------------------------------------------------------------------------


def seal_tuples(k_tuples: bytes, tuples_json: bytes) -> bytes:
    """IV (12 random bytes) | AES-256-GCM(K_A,tuples, IV, tuples JSON) | tag (section 3)."""
    iv = os.urandom(IV_SIZE)
    return iv + AESGCM(_check_bytes(k_tuples, CLIENT_KEY_SIZE, "K_A,tuples")).encrypt(iv, tuples_json, None)


def open_tuples(k_tuples: bytes, sealed: bytes) -> bytes:
    """The tuples JSON from ``IV | ciphertext | tag``; raises :class:`ProtocolError` if it does not verify."""
    aead = AESGCM(_check_bytes(k_tuples, CLIENT_KEY_SIZE, "K_A,tuples"))
    if not isinstance(sealed, _BYTES_LIKE) or len(sealed) < IV_SIZE + GCM_TAG_SIZE:
        raise ProtocolError("sealed tuples too short")
    sealed = bytes(sealed)
    try:
        return aead.decrypt(sealed[:IV_SIZE], sealed[IV_SIZE:], None)
    except InvalidTag:
        raise ProtocolError("sealed tuples do not authenticate") from None


def _tuples_json_reference(first_epoch: int, ebids: bytes, eccs: bytes) -> bytes:
    b64 = base64.b64encode
    entries = (
        b'{"epochId":%d,"key":{"ebid":"%s","ecc":"%s"}}'
        % (first_epoch + i, b64(ebids[8 * i : 8 * i + 8]), b64(eccs[i : i + 1]))
        for i in range(len(eccs))
    )
    return b"[" + b",".join(entries) + b"]"


def tuples_json(first_epoch: int, ebids_packed: bytes, eccs: bytes) -> bytes:
    """The compact tuples JSON of consecutive epochs from ``first_epoch`` (section 3), as the phones parse it:

    ``[{"epochId":5239,"key":{"ebid":"cBdNYU4caRM=","ecc":"xQ=="}}, ...]`` (no spaces), sorted by epochId.
    """
    _check_uint(first_epoch, 1 << 32, "epoch id")
    ebids_packed = _check_packed(ebids_packed, EBID_SIZE, "EBIDs")
    eccs = _check_bytes(eccs, len(ebids_packed) // EBID_SIZE, "ECCs")
    if NATIVE:
        return _native.tuples_json(first_epoch, ebids_packed, eccs)
    return _tuples_json_reference(first_epoch, ebids_packed, eccs)


# --- Bundles (section 3) ---------------------------------------------------------------------------

DayKeys = Callable[[int], bytes] | Mapping[int, bytes]


def bundle_epochs(first_epoch: int, bundle_days: int) -> int:
    """Number of tuples: the rest of ``first_epoch``'s day, then ``bundle_days - 1`` whole days (sect. 3)."""
    _check_uint(first_epoch, 1 << 32, "epoch id")
    _check_uint(bundle_days, 1 << 16, "bundle days")
    if bundle_days < 1:
        raise ProtocolError("bundle days must be at least 1")
    return (EPOCHS_PER_DAY - first_epoch % EPOCHS_PER_DAY) + EPOCHS_PER_DAY * (bundle_days - 1)


def _day_key(day_keys: DayKeys, day: int) -> bytes:
    """K_S of a day; a mapping without it, or a function returning None or raising KeyError: NoDayKeyError."""
    try:
        k_s = day_keys.get(day) if isinstance(day_keys, Mapping) else day_keys(day)
    except KeyError:
        k_s = None
    if k_s is None:
        raise NoDayKeyError("no server key for that day")
    return k_s


def build_bundle(
    day_keys: DayKeys, k_g: bytes, id_a: bytes, first_epoch: int, bundle_days: int, cc: int
) -> bytes:
    """The plaintext tuples JSON of one registration for a whole bundle (section 3).

    ``day_keys`` gives ``K_S`` of a day index (``epoch_id // EPOCHS_PER_DAY``), as a mapping or a function;
    a missing day raises :class:`NoDayKeyError`. Each epoch's EBID is encrypted under the key of its day.
    """
    end = first_epoch + bundle_epochs(first_epoch, bundle_days)
    chunks, epoch = [], first_epoch
    while epoch < end:
        day = epoch // EPOCHS_PER_DAY
        stop = min(end, (day + 1) * EPOCHS_PER_DAY)
        chunks.append(encrypt_ebids_packed(_day_key(day_keys, day), epoch, stop - epoch, id_a))
        epoch = stop
    ebids = b"".join(chunks)
    return tuples_json(first_epoch, ebids, encrypt_country_codes(k_g, ebids, cc))


def seal_bundle(
    k_tuples: bytes,
    day_keys: DayKeys,
    k_g: bytes,
    id_a: bytes,
    first_epoch: int,
    bundle_days: int,
    cc: int,
) -> bytes:
    """:func:`build_bundle` sealed with :func:`seal_tuples` under ``K_A,tuples`` (section 3)."""
    return seal_tuples(k_tuples, build_bundle(day_keys, k_g, id_a, first_epoch, bundle_days, cc))
