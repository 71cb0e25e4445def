"""Subcommands of ``robert`` for the crypto component (see robert_server/cli.py).

``robert crypto``          serve the gRPC crypto service on ROBERT_CRYPTO_LISTEN
``robert keys init``       create the key store (K_G, KEK, registration key pair, day keys ahead);
                           ``--dev``: only if none exists, with a development passphrase file when no
                           passphrase is set, else bring its day keys up to date (``robert up`` runs it)
``robert keys rotate``     add the day keys ahead, destroy expired ones; ``--kek`` / ``--federation-key``
                           also add a new KEK / K_G version; ``--kek`` then re-seals (see below)
``robert keys reseal``     re-seal every identity under the current KEK, then retire the older ones
                           (resumable: run it again after a crash)
``robert keys public``     print the registration public key (SPKI DER, base64) that apps embed
``robert keys export-federation-key FILE`` / ``import-federation-key FILE``
                           write K_G to a new 0600 file / use the K_G of such a file: how federated
                           countries come to share one K_G (carry the file by a secure channel)

Every ``keys`` command works on the store ROBERT_KEYSTORE names (file or pkcs11; see
crypto_backend/keystore/setup.py for the passphrase and the PIN). Nothing here ever prints a secret key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
from pathlib import Path
from typing import Any

from crypto_backend.keystore import (
    FileKeyStore,
    KeyStore,
    KeyStoreError,
    create_keystore,
    days_ahead,
    ensure_dev_keystore,
    open_keystore,
    utc_today,
)
from robert_common.clock import Clock
from robert_common.files import create_private
from robert_common.logs import setup_logging
from robert_common.settings import Settings, SettingsError, load_settings

log = logging.getLogger("robert.crypto")


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("crypto", help="serve the gRPC crypto service (keys, identities, SKINNY/AES/HMAC)")
    p.set_defaults(func=run_crypto)

    keys = sub.add_parser("keys", help="manage the crypto key store")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = ksub.add_parser("init", help="create the key store")
    init.add_argument(
        "--dev", action="store_true",
        help="development (robert up): create it only if missing (passphrase file if none is set)",
    )  # fmt: skip
    init.set_defaults(func=run_keys_init)
    rotate = ksub.add_parser("rotate", help="add day keys ahead, destroy expired ones")
    rotate.add_argument(
        "--kek", action="store_true", help="also add a new KEK version (seals new identities)"
    )
    rotate.add_argument(
        "--federation-key", action="store_true", help="also add a new K_G version (federation-wide change)"
    )
    rotate.add_argument(
        "--no-reseal",
        action="store_true",
        help="with --kek: do not re-seal now (run `robert keys reseal` later)",
    )
    rotate.set_defaults(func=run_keys_rotate)
    reseal = ksub.add_parser(
        "reseal", help="re-seal identities under the current KEK, then retire the old KEK versions"
    )
    reseal.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port meanwhile")
    reseal.set_defaults(func=run_keys_reseal)
    public = ksub.add_parser("public", help="print the registration public key (SPKI DER, base64)")
    public.set_defaults(func=run_keys_public)
    export = ksub.add_parser("export-federation-key", help="write K_G to a new file (mode 0600)")
    export.add_argument("file", type=Path, help="file to create (never overwritten)")
    export.set_defaults(func=run_keys_export_federation)
    imp = ksub.add_parser("import-federation-key", help="use the K_G of a file made by export-federation-key")
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=run_keys_import_federation)


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


def _where(settings: Settings) -> str:
    if settings.keystore == "pkcs11":
        return f"PKCS#11 token {settings.pkcs11_token_label!r}"
    return str(settings.resolved_keystore_path)


def run_keys_init(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    if getattr(args, "dev", False):
        try:
            ensure_dev_keystore(settings, Clock(settings.clock_shift_file))
        except KeyStoreError as e:
            return _fail(str(e))
        return 0
    try:
        store = create_keystore(settings)
        try:
            clock = Clock(settings.clock_shift_file)
            result = store.rotate(utc_today(clock), days_ahead(settings), settings.key_retention_days)
            public = store.registration_public_key()
        finally:
            store.close()
    except KeyStoreError as e:
        return _fail(str(e))
    print(f"created {_where(settings)}: {len(result.added)} day keys, registration public key:")
    print(base64.b64encode(public).decode())
    return 0


def run_keys_rotate(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        store = open_keystore(settings)
        try:
            clock = Clock(settings.clock_shift_file)
            result = store.rotate(utc_today(clock), days_ahead(settings), settings.key_retention_days)
            print(f"day keys: {len(result.added)} added, {len(result.purged)} destroyed")
            if args.federation_key:
                print(f"K_G version {store.rotate_federation_key()} now in use")
            if args.kek:
                print(f"KEK version {store.rotate_kek()} now seals new identities", flush=True)
                if not args.no_reseal:
                    return _reseal(settings, store, None)
        finally:
            store.close()
    except KeyStoreError as e:
        return _fail(str(e))
    return 0


def run_keys_reseal(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        store = open_keystore(settings)
    except KeyStoreError as e:
        return _fail(str(e))
    try:
        return _reseal(settings, store, args.metrics_port)
    finally:
        store.close()


def _reseal(settings: Settings, store: KeyStore, metrics_port: int | None) -> int:
    """Re-seal every identity under the store's current KEK, then retire the old versions."""
    from pymongo.errors import PyMongoError

    from crypto_backend.identities import IdentityStore, reseal
    from robert_common.mongo import open_database

    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=settings.metrics_host)

    async def run() -> int:
        async with open_database(settings, "robert keys reseal", settings.crypto_mongodb_database) as db:
            report = await reseal(
                IdentityStore(db, store),
                batch=settings.kek_reseal_batch,
                rate=settings.kek_reseal_rate,
                retire_after=settings.kek_retire_grace_seconds,
            )
        done = f"re-sealed {report.resealed} identities ({report.sealed} seal operations)"
        print(f"{done} in {report.passes} passes", flush=True)
        if report.broken:
            return _fail(f"{report.broken} identities do not open; old KEK versions kept")
        print(f"KEK in use: {store.kek_version}; retired: {report.retired or 'none'}")
        return 0

    try:
        return asyncio.run(run())
    except (SettingsError, KeyStoreError) as e:
        return _fail(str(e))
    except PyMongoError as e:
        return _fail(f"database error ({type(e).__name__}); run `robert keys reseal` again to resume")


def run_keys_public(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        store = open_keystore(settings)
    except KeyStoreError as e:
        return _fail(str(e))
    try:
        print(base64.b64encode(store.registration_public_key()).decode())
    finally:
        store.close()
    return 0


FEDERATION_KEY_HEADER = "ROBERT-FEDERATION-KEY-V1"  # first line of an exported K_G file


def run_keys_export_federation(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        store = open_keystore(settings)
    except KeyStoreError as e:
        return _fail(str(e))
    try:
        k_g = store.federation_key()
    finally:
        store.close()
    try:
        create_private(args.file, f"{FEDERATION_KEY_HEADER}\n{base64.b64encode(k_g).decode()}\n".encode())
    except OSError as e:
        return _fail(f"cannot create {args.file}: {e.strerror}")
    print(f"K_G written to {args.file} (keep it secret; import it on each federated server)")
    return 0


def run_keys_import_federation(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        lines = args.file.read_text().split()
    except (OSError, UnicodeDecodeError) as e:
        return _fail(f"cannot read {args.file}: {getattr(e, 'strerror', None) or 'not text'}")
    try:
        if len(lines) != 2 or lines[0] != FEDERATION_KEY_HEADER:
            raise ValueError
        k_g = base64.b64decode(lines[1], validate=True)
    except ValueError:
        return _fail(f"{args.file} is not a file written by `robert keys export-federation-key`")
    try:
        store = open_keystore(settings)
    except KeyStoreError as e:
        return _fail(str(e))
    try:
        if not isinstance(store, FileKeyStore):
            return _fail("importing a K_G is for file key stores (with a token, create it in the token)")
        version = store.import_federation_key(k_g)
    except KeyStoreError as e:
        return _fail(str(e))
    finally:
        store.close()
    print(f"K_G version {version} now in use")
    return 0
