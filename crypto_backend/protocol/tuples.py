"""Tuples and bundles (PROTOCOL.md section 3): what the server gives a phone at registration and status.

A *tuple* is ``{"epochId": e, "key": {"ebid": EBID, "ecc": ECC}}``; a *bundle* is the tuples of the rest of
the first epoch's day and ``bundle_days - 1`` whole days, as compact JSON, sealed as
``IV | AES-256-GCM(K_A,tuples, IV, JSON) | tag``.

Day keys: the day of an epoch is ``epoch_id // EPOCHS_PER_DAY`` counted from ``timeStart`` (a UTC midnight,
section 1). :func:`build_bundle` takes the day keys as a mapping or a function ``day_index -> K_S``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto_backend.protocol import backend as _backend
from crypto_backend.protocol._checks import BYTES_LIKE, check_bytes, check_packed, check_uint
from crypto_backend.protocol.constants import (
    CLIENT_KEY_SIZE,
    EBID_SIZE,
    EPOCHS_PER_DAY,
    GCM_TAG_SIZE,
    IV_SIZE,
)
from crypto_backend.protocol.country_code import encrypt_country_codes
from crypto_backend.protocol.ebid import encrypt_ebids_packed
from crypto_backend.protocol.errors import NoDayKeyError, ProtocolError

DayKeys = Callable[[int], bytes] | Mapping[int, bytes]


def seal_tuples(k_tuples: bytes, tuples_json: bytes) -> bytes:
    """IV (12 random bytes) | AES-256-GCM(K_A,tuples, IV, tuples JSON) | tag (section 3)."""
    iv = os.urandom(IV_SIZE)
    return iv + AESGCM(check_bytes(k_tuples, CLIENT_KEY_SIZE, "K_A,tuples")).encrypt(iv, tuples_json, None)


def open_tuples(k_tuples: bytes, sealed: bytes) -> bytes:
    """The tuples JSON from ``IV | ciphertext | tag``; raises :class:`ProtocolError` if it does not verify."""
    aead = AESGCM(check_bytes(k_tuples, CLIENT_KEY_SIZE, "K_A,tuples"))
    if not isinstance(sealed, BYTES_LIKE) or len(sealed) < IV_SIZE + GCM_TAG_SIZE:
        raise ProtocolError("sealed tuples too short")
    sealed = bytes(sealed)
    try:
        return aead.decrypt(sealed[:IV_SIZE], sealed[IV_SIZE:], None)
    except InvalidTag:
        raise ProtocolError("sealed tuples do not authenticate") from None


def tuples_json(first_epoch: int, ebids_packed: bytes, eccs: bytes) -> bytes:
    """The compact tuples JSON of consecutive epochs from ``first_epoch`` (section 3), as the phones parse it:

    ``[{"epochId":5239,"key":{"ebid":"cBdNYU4caRM=","ecc":"xQ=="}}, ...]`` (no spaces), sorted by epochId.
    """
    check_uint(first_epoch, 1 << 32, "epoch id")
    ebids_packed = check_packed(ebids_packed, EBID_SIZE, "EBIDs")
    eccs = check_bytes(eccs, len(ebids_packed) // EBID_SIZE, "ECCs")
    return _backend.tuples_json(first_epoch, ebids_packed, eccs)


def bundle_epochs(first_epoch: int, bundle_days: int) -> int:
    """Number of tuples: the rest of ``first_epoch``'s day, then ``bundle_days - 1`` whole days (sect. 3)."""
    check_uint(first_epoch, 1 << 32, "epoch id")
    check_uint(bundle_days, 1 << 16, "bundle days")
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
