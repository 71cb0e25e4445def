"""``robert certs``: the development CA and certificates of the internal plane (robert_common.tls).

``robert certs init``          create the CA and a certificate per component (crypto, codes, api,
                               matcher, seed) in ROBERT_GRPC_TLS_DIR (default <data_dir>/tls)
``robert certs issue NAME``    a certificate for NAME (e.g. ``issuer-prostopcovid``); replaces one of
                               the same name (renewal)
``robert certs list``          every certificate there, its identity and expiry

Private keys are written 0600 and never printed. Production may use its own PKI instead: the
ROBERT_GRPC_TLS_CA / _CERT / _KEY settings name the files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from robert_common import tls
from robert_common.settings import load_settings


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("certs", help="the CA and certificates of the internal gRPC plane (mutual TLS)")
    csub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = csub.add_parser("init", help="create the CA and one certificate per component")
    init.set_defaults(func=run_init)
    issue = csub.add_parser("issue", help="issue (or renew) the certificate of NAME")
    issue.add_argument("name", help="identity: a component (api, matcher, seed...) or issuer-<name>")
    issue.add_argument("--days", type=int, default=tls.CERT_DAYS, help="validity in days")
    issue.set_defaults(func=run_issue)
    listing = csub.add_parser("list", help="list the certificates and their expiry")
    listing.set_defaults(func=run_list)


def _fail(message: str) -> int:
    print(f"robert: {message}", file=sys.stderr)
    return 1


def run_init(args: argparse.Namespace) -> int:
    directory = tls.tls_dir(load_settings(use_running_embedded=False))
    if (directory / f"{tls.CA_NAME}.pem").exists():
        return _fail(f"a CA already exists in {directory}")
    created = tls.ensure_dev_certs(directory)
    print(f"created in {directory}: {', '.join(created)}")
    return 0


def run_issue(args: argparse.Namespace) -> int:
    directory = tls.tls_dir(load_settings(use_running_embedded=False))
    if not (directory / f"{tls.CA_NAME}.pem").exists():
        return _fail(f"no CA in {directory}: run `robert certs init` first")
    if not 1 <= args.days <= 3650:
        return _fail("--days must be between 1 and 3650")
    try:
        cert, key = tls.issue(directory, args.name, days=args.days)
    except ValueError as e:
        return _fail(str(e))
    print(f"issued {cert} (key {key}, mode 0600)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    directory = tls.tls_dir(load_settings(use_running_embedded=False))
    now = dt.datetime.now(dt.UTC)
    certs = tls.list_certs(directory)
    if not certs:
        return _fail(f"no certificate in {directory}")
    for c in certs:
        left = (c.not_after - now).days
        state = "EXPIRED" if c.expired(now) else f"{left} days left"
        kind = "CA" if c.is_ca else "  "
        print(f"{c.name:<24} {kind} {c.subject:<24} until {c.not_after:%Y-%m-%d %H:%M} UTC ({state})")
    return 0
