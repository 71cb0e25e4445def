"""Encrypted country codes (PROTOCOL.md section 3; section 8 step 1 on the server).

``ECC = AES-256-ECB(K_G, EBID | 0x00*8)[0] XOR CC``: one byte, under the federation key ``K_G``. Recovering
CC is the same operation. The bulk forms do one AES-ECB call over packed EBIDs.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from crypto_backend.protocol import backend as _backend
from crypto_backend.protocol._checks import check_bytes, check_cc, check_packed
from crypto_backend.protocol.constants import EBID_SIZE, ECC_SIZE, K_G_SIZE


@lru_cache(maxsize=8)
def _aes_ecb(k_g: bytes) -> Cipher:
    return Cipher(algorithms.AES(k_g), modes.ECB())  # noqa: S305 - ECB on one block is the protocol


def _country_masks(k_g: bytes, ebids: bytes) -> bytes:
    """First byte of AES-256-ECB(K_G, EBID | 0x00*8) for each packed EBID."""
    k_g = check_bytes(k_g, K_G_SIZE, "K_G")
    if not ebids:
        return b""
    return _aes_ecb(k_g).encryptor().update(_backend.pad16(ebids))[::16]


@lru_cache(maxsize=256)
def _xor_table(value: int) -> bytes:
    return bytes(i ^ value for i in range(256))


def encrypt_country_code(k_g: bytes, ebid: bytes, cc: int) -> bytes:
    """ECC = AES-256-ECB(K_G, EBID | 0x00*8)[0] XOR CC, one byte (section 3)."""
    return encrypt_country_codes(k_g, check_bytes(ebid, EBID_SIZE, "EBID"), cc)


def country_code(k_g: bytes, ebid: bytes, ecc: bytes) -> int:
    """Recover CC from an EBID and its ECC: the same operation as encrypting (section 3)."""
    return country_codes(k_g, check_bytes(ebid, EBID_SIZE, "EBID"), check_bytes(ecc, ECC_SIZE, "ECC"))[0]


def encrypt_country_codes(k_g: bytes, ebids_packed: bytes, cc: int) -> bytes:
    """One ECC per packed EBID, all for country ``cc``, in one AES-ECB call (section 3)."""
    masks = _country_masks(k_g, check_packed(ebids_packed, EBID_SIZE, "EBIDs"))
    return masks.translate(_xor_table(check_cc(cc)))


def country_codes(k_g: bytes, ebids_packed: bytes, eccs: bytes) -> bytes:
    """The country code (one byte each) of packed EBIDs and their ECCs (section 3, section 8 step 1)."""
    ebids_packed = check_packed(ebids_packed, EBID_SIZE, "EBIDs")
    eccs = check_bytes(eccs, len(ebids_packed) // EBID_SIZE, "ECCs")
    masks = _country_masks(k_g, ebids_packed)
    return (int.from_bytes(masks, "big") ^ int.from_bytes(eccs, "big")).to_bytes(len(eccs), "big")
