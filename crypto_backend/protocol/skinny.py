"""SKINNY-64-192: plain reference implementation, read straight from the SKINNY paper.

Beierle, Jean, Kölbl, Leander, Moradi, Peyrin, Sasaki, Sasdrich, Sim, "The SKINNY Family of Block Ciphers
and Its Low-Latency Variant MANTIS", CRYPTO 2016, section 2 ("Specifications of SKINNY").

This module is the readable definition the fast native version (``_skinny.c``) is tested against; it is
slow (tens of microseconds per block) and is never on a hot path.

Layout (paper, section 2): the 64-bit block is a 4x4 array of 4-bit cells, filled row by row, cell 0 being
the high nibble of byte 0. The 192-bit tweakey is ``TK1 | TK2 | TK3`` (8 bytes each), laid out the same way.
"""

from __future__ import annotations

BLOCK_SIZE = 8  # bytes: 16 cells of 4 bits
TWEAKEY_SIZE = 24  # bytes: TK1 | TK2 | TK3
ROUNDS = 40  # SKINNY-64-192 (paper, table 2)

# 4-bit S-box S4 (paper, table 13) and its inverse.
SBOX = (0xC, 0x6, 0x9, 0x0, 0x1, 0xA, 0x2, 0xB, 0x3, 0x8, 0x5, 0xD, 0x4, 0xE, 0x7, 0xF)
SBOX_INV = tuple(SBOX.index(x) for x in range(16))

# ShiftRows: row i rotated right by i cells; new cell i takes old cell SHIFT_ROWS[i].
SHIFT_ROWS = (0, 1, 2, 3, 7, 4, 5, 6, 10, 11, 8, 9, 13, 14, 15, 12)
SHIFT_ROWS_INV = tuple(SHIFT_ROWS.index(i) for i in range(16))

# Tweakey cell permutation P_T: new cell i takes old cell TWEAKEY_PERMUTATION[i].
TWEAKEY_PERMUTATION = (9, 15, 8, 13, 10, 14, 12, 11, 0, 1, 2, 3, 4, 5, 6, 7)

Cells = list[int]


def _cells(block: bytes) -> Cells:
    """Split 8 bytes into 16 nibbles, high nibble first."""
    return [nibble for byte in block for nibble in (byte >> 4, byte & 0xF)]


def _bytes(cells: Cells) -> bytes:
    """Pack 16 nibbles back into 8 bytes."""
    return bytes((cells[i] << 4) | cells[i + 1] for i in range(0, 16, 2))


def _lfsr_tk2(x: int) -> int:
    """TK2 cell LFSR: (x3, x2, x1, x0) -> (x2, x1, x0, x3 ^ x2)."""
    return ((x << 1) & 0xE) | (((x >> 3) ^ (x >> 2)) & 1)


def _lfsr_tk3(x: int) -> int:
    """TK3 cell LFSR: (x3, x2, x1, x0) -> (x0 ^ x3, x3, x2, x1)."""
    return (x >> 1) | (((x << 3) ^ x) & 0x8)


def _round_constants() -> list[int]:
    """The 6-bit affine LFSR (rc5..rc0) <- (rc4..rc0, rc5 ^ rc4 ^ 1), from 0, updated before each round."""
    rc, out = 0, []
    for _ in range(ROUNDS):
        rc = ((rc << 1) & 0x3F) | (((rc >> 5) ^ (rc >> 4) ^ 1) & 1)
        out.append(rc)
    return out


ROUND_CONSTANTS = tuple(_round_constants())


def round_tweakeys(key: bytes) -> list[Cells]:
    """The 8 cells (first two rows of TK1 ^ TK2 ^ TK3) added to the state in each of the 40 rounds."""
    if len(key) != TWEAKEY_SIZE:
        raise ValueError("SKINNY-64-192 key must be 24 bytes")
    tk1, tk2, tk3 = _cells(key[0:8]), _cells(key[8:16]), _cells(key[16:24])
    schedule = []
    for _ in range(ROUNDS):
        schedule.append([tk1[i] ^ tk2[i] ^ tk3[i] for i in range(8)])
        tk1, tk2, tk3 = ([tk[TWEAKEY_PERMUTATION[i]] for i in range(16)] for tk in (tk1, tk2, tk3))
        tk2[:8] = [_lfsr_tk2(x) for x in tk2[:8]]
        tk3[:8] = [_lfsr_tk3(x) for x in tk3[:8]]
    return schedule


def _mix_columns(s: Cells) -> Cells:
    """Multiply each column (r0, r1, r2, r3) by M: (r0^r2^r3, r0, r1^r2, r0^r2)."""
    out = [0] * 16
    for c in range(4):
        r0, r1, r2, r3 = s[c], s[4 + c], s[8 + c], s[12 + c]
        out[c], out[4 + c], out[8 + c], out[12 + c] = r0 ^ r2 ^ r3, r0, r1 ^ r2, r0 ^ r2
    return out


def _mix_columns_inv(s: Cells) -> Cells:
    """Inverse of :func:`_mix_columns`."""
    out = [0] * 16
    for c in range(4):
        r0, r1, r2, r3 = s[c], s[4 + c], s[8 + c], s[12 + c]
        out[c], out[4 + c], out[8 + c], out[12 + c] = r1, r1 ^ r2 ^ r3, r1 ^ r3, r0 ^ r3
    return out


def _add_constants_and_tweakey(s: Cells, rc: int, tk: Cells) -> None:
    """AddConstants (c0 = rc3..rc0 at cell 0, c1 = rc5 rc4 at cell 4, c2 = 2 at cell 8), AddRoundTweakey."""
    s[0] ^= rc & 0xF
    s[4] ^= rc >> 4
    s[8] ^= 0x2
    for i in range(8):
        s[i] ^= tk[i]


def encrypt_block(key: bytes, block: bytes, schedule: list[Cells] | None = None) -> bytes:
    """Encrypt one 8-byte block under a 24-byte tweakey (40 rounds)."""
    if len(block) != BLOCK_SIZE:
        raise ValueError("SKINNY-64 block must be 8 bytes")
    schedule = schedule or round_tweakeys(key)
    s = _cells(block)
    for r in range(ROUNDS):
        s = [SBOX[x] for x in s]
        _add_constants_and_tweakey(s, ROUND_CONSTANTS[r], schedule[r])
        s = _mix_columns([s[SHIFT_ROWS[i]] for i in range(16)])
    return _bytes(s)


def decrypt_block(key: bytes, block: bytes, schedule: list[Cells] | None = None) -> bytes:
    """Decrypt one 8-byte block under a 24-byte tweakey: :func:`encrypt_block`'s rounds undone in reverse."""
    if len(block) != BLOCK_SIZE:
        raise ValueError("SKINNY-64 block must be 8 bytes")
    schedule = schedule or round_tweakeys(key)
    s = _cells(block)
    for r in reversed(range(ROUNDS)):
        s = _mix_columns_inv(s)
        s = [s[SHIFT_ROWS_INV[i]] for i in range(16)]
        _add_constants_and_tweakey(s, ROUND_CONSTANTS[r], schedule[r])
        s = [SBOX_INV[x] for x in s]
    return _bytes(s)


class Key:
    """A 24-byte SKINNY-64-192 key with its round tweakeys computed once.

    Same interface as the native ``_skinny.Key``: bulk methods over packed 8-byte blocks.
    """

    __slots__ = ("_key", "_schedule")

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)
        self._schedule = round_tweakeys(self._key)

    def encrypt(self, blocks: bytes) -> bytes:
        """Encrypt ``len(blocks) // 8`` packed blocks."""
        _check_blocks(blocks)
        return b"".join(
            encrypt_block(self._key, blocks[i : i + 8], self._schedule) for i in range(0, len(blocks), 8)
        )

    def decrypt(self, blocks: bytes) -> bytes:
        """Decrypt ``len(blocks) // 8`` packed blocks."""
        _check_blocks(blocks)
        return b"".join(
            decrypt_block(self._key, blocks[i : i + 8], self._schedule) for i in range(0, len(blocks), 8)
        )

    def encrypt_epochs(self, first_epoch: int, count: int, id_a: bytes) -> bytes:
        """Encrypt ``epoch_24 | id_a`` for ``count`` consecutive epochs from ``first_epoch``."""
        if len(id_a) != 5 or count < 0 or first_epoch < 0:
            raise ValueError("bad epoch range or id_A")
        return self.encrypt(
            b"".join(((first_epoch + i) & 0xFFFFFF).to_bytes(3, "big") + id_a for i in range(count))
        )


def _check_blocks(blocks: bytes) -> None:
    if len(blocks) % BLOCK_SIZE:
        raise ValueError("data must be a whole number of 8-byte blocks")
