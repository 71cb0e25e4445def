"""Subcommands of ``robert`` for the crypto component (see robert_server/cli.py).

``robert crypto``          serve the gRPC crypto service on ROBERT_CRYPTO_LISTEN
``robert keys init``       create the key store (K_G, KEK, registration key pair, day keys ahead)
``robert keys rotate``     add the day keys ahead, destroy expired ones; ``--kek`` / ``--federation-key``
                           also add a new KEK / K_G version
``robert keys public``     print the registration public key (SPKI DER, base64) that apps embed

The passphrase comes from ROBERT_KEYSTORE_PASSPHRASE or the file ROBERT_KEYSTORE_PASSPHRASE_FILE.
Nothing here ever prints a secret key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
from typing import Any

from crypto_backend.keystore import (
    FileKeyStore,
    KeyStoreError,
    days_ahead,
    open_keystore,
    resolve_passphrase,
    utc_today,
)
from robert_common.clock import Clock
from robert_common.logs import setup_logging
from robert_common.settings import load_settings

log = logging.getLogger("robert.crypto")


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("crypto", help="serve the gRPC crypto service (keys, identities, SKINNY/AES/HMAC)")
    p.set_defaults(func=run_crypto)

    keys = sub.add_parser("keys", help="manage the crypto key store")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = ksub.add_parser("init", help="create the key store")
    init.set_defaults(func=run_keys_init)
    rotate = ksub.add_parser("rotate", help="add day keys ahead, destroy expired ones")
    rotate.add_argument(
        "--kek", action="store_true", help="also add a new KEK version (seals new identities)"
    )
    rotate.add_argument(
        "--federation-key", action="store_true", help="also add a new K_G version (federation-wide change)"
    )
    rotate.set_defaults(func=run_keys_rotate)
    public = ksub.add_parser("public", help="print the registration public key (SPKI DER, base64)")
    public.set_defaults(func=run_keys_public)


def _fail(message: str) -> int:
    print(f"robert: {message}", file=sys.stderr)
    return 1


def run_crypto(args: argparse.Namespace) -> int:
    from crypto_backend.service import serve

    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        asyncio.run(serve(settings, Clock(settings.clock_shift_file)))
    except KeyStoreError as e:
        return _fail(str(e))
    except (OSError, RuntimeError) as e:
        return _fail(f"crypto service stopped: {e}")
    return 0


def run_keys_init(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        passphrase, dev = resolve_passphrase(settings)
        if dev:
            log.warning("using the development passphrase file: not for production")
        store = FileKeyStore.create(settings.resolved_keystore_path, passphrase)
        clock = Clock(settings.clock_shift_file)
        result = store.rotate(utc_today(clock), days_ahead(settings), settings.key_retention_days)
    except KeyStoreError as e:
        return _fail(str(e))
    print(f"created {store.path}: {len(result.added)} day keys, registration public key:")
    print(base64.b64encode(store.registration_public_key()).decode())
    return 0


def run_keys_rotate(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        store = open_keystore(settings)
        clock = Clock(settings.clock_shift_file)
        result = store.rotate(utc_today(clock), days_ahead(settings), settings.key_retention_days)
        print(f"day keys: {len(result.added)} added, {len(result.purged)} destroyed")
        if args.kek:
            print(f"KEK version {store.rotate_kek()} now seals new identities")
        if args.federation_key:
            print(f"K_G version {store.rotate_federation_key()} now in use")
    except KeyStoreError as e:
        return _fail(str(e))
    return 0


def run_keys_public(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        store = open_keystore(settings)
    except KeyStoreError as e:
        return _fail(str(e))
    print(base64.b64encode(store.registration_public_key()).decode())
    return 0
