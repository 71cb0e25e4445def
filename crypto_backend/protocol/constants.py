"""The named constants of the ROBERT protocol: field sizes, salts and labels, each with its PROTOCOL.md
section."""

from __future__ import annotations

EPOCHS_PER_DAY = 96  # section 1: 15-minute epochs from timeStart, a UTC midnight

# Keys (section 2).
K_S_SIZE = 24  # SKINNY-64-192 server key of one day
K_G_SIZE = 32  # AES-256 federation key
CLIENT_KEY_SIZE = 32  # K_A,mac and K_A,tuples
ID_A_SIZE = 5

# EBIDs, country codes and sealed tuples (section 3).
EBID_SIZE = 8
EPOCH_ID_24_SIZE = 3  # epochId_24, big-endian, the first bytes of an EBID's plaintext
ECC_SIZE = 1
COUNTRY_CODE_FRANCE = 0x21
IV_SIZE = 12  # AES-256-GCM IV of the sealed tuples
GCM_TAG_SIZE = 16

# HELLO messages (section 4) and authenticated requests (section 5).
HELLO_TIME_SIZE = 2
HELLO_MAC_SIZE = 5
REQUEST_TIME_SIZE = 4
REQUEST_MAC_SIZE = 32

# Domain separation: the first byte of every HMAC message (sections 4 and 5).
SALT_HELLO = 0x01
SALT_STATUS = 0x02
SALT_UNREGISTER = 0x03
SALT_DELETE_HISTORY = 0x04
REQUEST_SALTS = (SALT_STATUS, SALT_UNREGISTER, SALT_DELETE_HISTORY)

# Derivation labels of the per-phone keys (section 2).
LABEL_MAC = b"mac"
LABEL_TUPLES = b"tuples"
