"""Ephemeral Bluetooth identifiers (PROTOCOL.md section 3).

``EBID = SKINNY-64-192-Encrypt(K_S, epochId_24 | id_A)``: 8 bytes, under the server key ``K_S`` of the
epoch's day. The bulk forms work on *packed* bytes (``n * 8`` bytes of EBIDs) so that one call of the
backend's cipher does a whole bundle or a whole batch of contacts.
"""

from __future__ import annotations

from collections.abc import Sequence

from crypto_backend.protocol import backend as _backend
from crypto_backend.protocol._checks import check_bytes, check_packed, check_uint
from crypto_backend.protocol.constants import EBID_SIZE, EPOCH_ID_24_SIZE, ID_A_SIZE, K_S_SIZE


def encrypt_ebid(k_s: bytes, epoch_id: int, id_a: bytes) -> bytes:
    """EBID = SKINNY-64-192-Encrypt(K_S, epochId_24 | id_A) (section 3)."""
    return encrypt_ebids_packed(k_s, epoch_id, 1, id_a)


def decrypt_ebid(k_s: bytes, ebid: bytes) -> tuple[int, bytes]:
    """Decrypt an EBID into ``(epochId_24, id_A)`` (section 3)."""
    key = _backend.key(check_bytes(k_s, K_S_SIZE, "K_S"))
    block = key.decrypt(check_bytes(ebid, EBID_SIZE, "EBID"))
    return int.from_bytes(block[:EPOCH_ID_24_SIZE], "big"), block[EPOCH_ID_24_SIZE:]


def encrypt_ebids(k_s: bytes, epoch_ids: Sequence[int], id_a: bytes) -> list[bytes]:
    """EBIDs of one ``id_A`` for any epochs, all under one day key (section 3)."""
    id_a = check_bytes(id_a, ID_A_SIZE, "id_A")
    blocks = b"".join(
        (check_uint(e, 1 << 32, "epoch id") & 0xFFFFFF).to_bytes(EPOCH_ID_24_SIZE, "big") + id_a
        for e in epoch_ids
    )
    packed = _backend.skinny_key(k_s).encrypt(blocks)
    return [packed[i : i + EBID_SIZE] for i in range(0, len(packed), EBID_SIZE)]


def decrypt_ebids(k_s: bytes, ebids: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """Decrypt many EBIDs under one day key into ``(epochId_24, id_A)`` pairs (section 3)."""
    packed = b"".join(check_bytes(e, EBID_SIZE, "EBID") for e in ebids)
    plain = decrypt_ebids_packed(k_s, packed)
    return [(int.from_bytes(plain[i : i + 3], "big"), plain[i + 3 : i + 8]) for i in range(0, len(plain), 8)]


def encrypt_ebids_packed(k_s: bytes, first_epoch: int, count: int, id_a: bytes) -> bytes:
    """``count`` EBIDs of one ``id_A`` for consecutive epochs from ``first_epoch``, packed (section 3)."""
    check_uint(first_epoch, 1 << 32, "epoch id")
    check_uint(count, 1 << 20, "epoch count")
    key = _backend.key(check_bytes(k_s, K_S_SIZE, "K_S"))
    return key.encrypt_epochs(first_epoch, count, check_bytes(id_a, ID_A_SIZE, "id_A"))


def decrypt_ebids_packed(k_s: bytes, ebids: bytes) -> bytes:
    """Decrypt packed EBIDs into ``n * 8`` bytes of ``epochId_24 (BE) | id_A`` blocks (section 3)."""
    key = _backend.key(check_bytes(k_s, K_S_SIZE, "K_S"))
    return key.decrypt(check_packed(ebids, EBID_SIZE, "EBIDs"))
