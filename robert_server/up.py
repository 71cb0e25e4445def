"""``robert up``: the whole system on one machine, on the embedded defaults.

Starts, in order: the embedded database (only when ROBERT_MONGODB_URI is unset), a development key
store (only if none exists; with ROBERT_KEYSTORE=pkcs11, the keys in the token if it holds none),
then one process of each component: ``robert crypto``, ``robert codes serve``, ``robert api`` and
``robert matcher``. Every child gets the same settings through the
environment. Ctrl-C (or SIGTERM) stops the children, then the database. If a child dies, the others
are stopped too and ``robert up`` exits non-zero: a half-running system is worse than a stopped one.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from robert_common.clock import Clock
from robert_common.logs import setup_logging
from robert_common.mongo import EmbeddedMongo
from robert_common.settings import EMBEDDED_URI_FILE, Settings, load_settings

log = logging.getLogger("robert.up")

COMPONENTS: tuple[tuple[str, list[str]], ...] = (
    ("crypto", ["crypto"]),
    ("codes", ["codes", "serve"]),
    ("api", ["api"]),
    ("matcher", ["matcher"]),
    # ProStopCovid (issue 13): the development OIDC provider (skipped when ROBERT_PORTAL_OIDC_ISSUER is
    # set), then the portal, with an issuer token of its own (see robert_server/portal/up.py).
    ("dev-idp", ["portal", "dev-idp"]),
    ("portal", ["portal"]),
)


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="start the whole system on this machine (embedded defaults)")
    p.add_argument(
        "--without", action="append", default=[], choices=[name for name, _ in COMPONENTS],
        help="do not start this component (repeatable)",
    )  # fmt: skip
    p.set_defaults(func=run)


def _spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.info("starting component", extra={"component": name})
    return subprocess.Popen([sys.executable, "-m", "robert_server.cli", *args], env=env)


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for name, proc in children.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("component did not stop in time; killing it", extra={"component": name})
            proc.kill()
            proc.wait()


def _prepare(settings: Settings) -> None:
    """Development conveniences: a key store (and its passphrase file) when none exists."""
    from crypto_backend.keystore import ensure_dev_keystore

    ensure_dev_keystore(settings, Clock(settings.clock_shift_file))


def run(args: argparse.Namespace) -> int:
    settings = load_settings(use_running_embedded=False)
    setup_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    database: EmbeddedMongo | None = None
    uri_file = settings.data_dir / EMBEDDED_URI_FILE
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if settings.mongodb_uri is None:
            database = EmbeddedMongo(settings.data_dir / "mongo")
            env["ROBERT_MONGODB_URI"] = database.start()
            uri_file.write_text(env["ROBERT_MONGODB_URI"] + "\n")
            log.info("embedded database started", extra={"data": str(settings.data_dir / "mongo")})
        _prepare(settings)
        from robert_server.portal.up import prepare_portal

        skipped = prepare_portal(settings, env, args.without)
        for name, cmd in COMPONENTS:
            if name not in args.without and name not in skipped:
                children[name] = _spawn(name, cmd, env)
        log.info(
            "system up",
            extra={"api": f"http://{settings.http_host}:{settings.http_port}/api/v6",
                   "internal": f"http://{settings.metrics_host}:{settings.metrics_port}/health",
                   "portal": f"http://localhost:{settings.portal_port}/"},
        )  # fmt: skip
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    log.error("component exited; stopping the system",
                              extra={"component": name, "code": proc.returncode})  # fmt: skip
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop_all(children)
        if database is not None:
            uri_file.unlink(missing_ok=True)
            database.stop()
        log.info("system stopped")
