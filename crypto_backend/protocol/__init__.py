"""The ROBERT protocol operations, bytes in and bytes out (PROTOCOL.md sections 2 to 5).

One module per operation, each function named after it; this package re-exports them all:

- ``constants``: field sizes, salts and labels;            - ``errors``: ProtocolError, NoDayKeyError;
- ``ebid``: encrypt/decrypt EBIDs (section 3);              - ``country_code``: ECCs (section 3);
- ``macs``: HELLO and request MACs (sections 4 and 5);      - ``keys``: ECDH key derivation (section 2);
- ``tuples``: tuples JSON, bundles, sealing (section 3);
- ``backend``: the native (``_skinny.c``) or pure-Python (``skinny.py``, ``_pure.py``) kernels behind them,
  chosen at import (native when built) and selectable with :func:`use_backend`.

Hot paths have bulk forms over *packed* bytes (``n * 8`` bytes of EBIDs, ``n`` bytes of ECCs). Every bad input
raises :class:`ProtocolError` (a ``ValueError``) with a short message that never holds key bytes, EBIDs, MACs
or ``id_A``.
"""

from __future__ import annotations

from crypto_backend.protocol.backend import (
    DEFAULT,
    NATIVE,
    NATIVE_BACKEND,
    PURE_BACKEND,
    Backend,
    SkinnyKey,
    SkinnyKeyLike,
    active_backend,
    skinny_key,
    use_backend,
)
from crypto_backend.protocol.constants import (
    CLIENT_KEY_SIZE,
    COUNTRY_CODE_FRANCE,
    EBID_SIZE,
    ECC_SIZE,
    EPOCH_ID_24_SIZE,
    EPOCHS_PER_DAY,
    GCM_TAG_SIZE,
    HELLO_MAC_SIZE,
    HELLO_TIME_SIZE,
    ID_A_SIZE,
    IV_SIZE,
    K_G_SIZE,
    K_S_SIZE,
    LABEL_MAC,
    LABEL_TUPLES,
    REQUEST_MAC_SIZE,
    REQUEST_SALTS,
    REQUEST_TIME_SIZE,
    SALT_DELETE_HISTORY,
    SALT_HELLO,
    SALT_STATUS,
    SALT_UNREGISTER,
)
from crypto_backend.protocol.country_code import (
    country_code,
    country_codes,
    encrypt_country_code,
    encrypt_country_codes,
)
from crypto_backend.protocol.ebid import (
    decrypt_ebid,
    decrypt_ebids,
    decrypt_ebids_packed,
    encrypt_ebid,
    encrypt_ebids,
    encrypt_ebids_packed,
)
from crypto_backend.protocol.errors import NoDayKeyError, ProtocolError
from crypto_backend.protocol.keys import derive_client_keys
from crypto_backend.protocol.macs import (
    hello_mac,
    request_mac,
    verify_hello_mac,
    verify_hello_macs,
    verify_request_mac,
)
from crypto_backend.protocol.tuples import (
    DayKeys,
    build_bundle,
    bundle_epochs,
    open_tuples,
    seal_bundle,
    seal_tuples,
    tuples_json,
)

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
    # added with the split: the backends, and the constants the package always exposed
    "Backend",
    "DEFAULT",
    "NATIVE_BACKEND",
    "PURE_BACKEND",
    "active_backend",
    "use_backend",
    "SkinnyKeyLike",
    "DayKeys",
    "CLIENT_KEY_SIZE",
    "COUNTRY_CODE_FRANCE",
    "EPOCH_ID_24_SIZE",
    "GCM_TAG_SIZE",
    "HELLO_MAC_SIZE",
    "HELLO_TIME_SIZE",
    "ID_A_SIZE",
    "IV_SIZE",
    "K_G_SIZE",
    "K_S_SIZE",
    "LABEL_MAC",
    "LABEL_TUPLES",
    "REQUEST_MAC_SIZE",
    "REQUEST_SALTS",
    "REQUEST_TIME_SIZE",
    "SALT_DELETE_HISTORY",
    "SALT_HELLO",
    "SALT_STATUS",
    "SALT_UNREGISTER",
]
