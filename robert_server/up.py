"""``robert up``: the whole system on one machine, on the embedded defaults.

Starts, in order: the embedded database (only when ROBERT_MONGODB_URI is unset), a development key
store (only if none exists; with ROBERT_KEYSTORE=pkcs11, the keys in the token if it holds none),
then one process of each component: ``robert crypto``, ``robert codes serve``, ``robert api`` and
``robert matcher``, and with partner countries configured ``robert federation serve`` and ``robert
federation forward``. Every child gets the same settings through the environment. Ctrl-C (or SIGTERM)
stops the children, then the database.

Supervision: a component that exits is started again after a back-off (0.5 s, doubling up to
``up_restart_backoff_max``), and the log says so; the embedded database is watched the same way and
started again on the same port and data folder, so the components' URI stays valid. Only a component
(or the database) that needs more than ``up_max_restarts`` restarts within ``up_restart_window`` seconds
stops the whole system, with a non-zero exit: a crash loop is worse than a stopped system.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from robert_common import tls
from robert_common.clock import Clock
from robert_common.logs import setup_logging
from robert_common.mongo import EmbeddedMongo, EmbeddedMongoError
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
    # Federation (issue 14): only with ROBERT_FEDERATION_PARTNERS set.
    ("federation", ["federation", "serve"]),
    ("forwarder", ["federation", "forward"]),
)
FEDERATION_COMPONENTS = ("federation", "forwarder")


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


FIRST_BACKOFF = 0.5  # seconds before the first restart; doubled for each restart within the window


class Restarts:
    """When a crashed process may start again, and whether it failed too often (per process)."""

    def __init__(self, settings: Settings) -> None:
        self.max_restarts = settings.up_max_restarts
        self.window = settings.up_restart_window
        self.backoff_max = settings.up_restart_backoff_max
        self.times: dict[str, list[float]] = {}

    def schedule(self, name: str, now: float) -> float | None:
        """The delay before restarting ``name``, which just exited; None if it failed too often."""
        recent = [t for t in self.times.get(name, []) if now - t < self.window]
        if len(recent) >= self.max_restarts:
            return None
        recent.append(now)
        self.times[name] = recent
        return min(self.backoff_max, FIRST_BACKOFF * 2 ** (len(recent) - 1))


def _restart_database(database: EmbeddedMongo) -> EmbeddedMongo:
    """The embedded database again, on the same port and data folder (the children keep their URI)."""
    database.stop()  # reaps the dead process, closes its log
    again = EmbeddedMongo(database.data_dir, port=database.port)
    again.start()
    return again


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


def _make_private(data_dir: Path) -> None:
    """The data folder and everything in it, owner only (0700 folders, 0600 files): also what earlier
    versions left readable by all (0755 folder, 0644 database files and mongodb.uri)."""
    data_dir.chmod(0o700)
    for root, dirs, files in os.walk(data_dir):
        for name, mode in [(d, 0o700) for d in dirs] + [(f, 0o600) for f in files]:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # a link may point out of the data folder: left alone
                os.chmod(path, mode)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _prepare(settings: Settings) -> None:
    """Development conveniences: a key store (and its passphrase file) when none exists; the internal
    plane's CA and one certificate per component when no CA is configured nor found (mutual TLS)."""
    from crypto_backend.keystore import ensure_dev_keystore

    ensure_dev_keystore(settings, Clock(settings.clock_shift_file))
    _prepare_certs(settings)


def _prepare_certs(settings: Settings) -> None:
    addresses = (
        settings.crypto_listen,
        settings.crypto_address,
        settings.codes_listen,
        settings.codes_address,
    )
    if tls.check_plaintext(settings, *addresses) or settings.grpc_tls_ca is not None:
        return  # development plaintext (loopback only), or the operator's own PKI
    created = tls.ensure_dev_certs(tls.tls_dir(settings))
    if created:
        log.warning(
            "created DEVELOPMENT certificates of the internal plane: not for production",
            extra={"path": str(tls.tls_dir(settings)), "names": created},
        )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(use_running_embedded=False)
    setup_logging(settings.log_level)
    os.umask(0o077)  # every file of the system (keys, database, codes) is its owner's only, children too
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _make_private(settings.data_dir)
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
            _write_private(uri_file, env["ROBERT_MONGODB_URI"] + "\n")
            log.info("embedded database started", extra={"data": str(settings.data_dir / "mongo")})
        _prepare(settings)
        from robert_server.portal.up import prepare_portal

        skipped = prepare_portal(settings, env, args.without)
        for name, cmd in COMPONENTS:
            if name in FEDERATION_COMPONENTS and not settings.federation_partners:
                continue
            if name not in args.without and name not in skipped:
                children[name] = _spawn(name, cmd, env)
        log.info(
            "system up",
            extra={"api": f"http://{settings.http_host}:{settings.http_port}/api/v6",
                   "internal": f"http://{settings.metrics_host}:{settings.metrics_port}/health",
                   "portal": f"http://localhost:{settings.portal_port}/"},
        )  # fmt: skip
        restarts = Restarts(settings)
        due: dict[str, float] = {}  # component (or "database") -> when to start it again
        commands = dict(COMPONENTS)
        while not stopping:
            now = time.monotonic()
            exited = [(n, p.returncode) for n, p in children.items() if n not in due and p.poll() is not None]
            if database is not None and "database" not in due and database.proc is not None:
                if database.proc.poll() is not None:
                    exited.append(("database", database.proc.returncode))
            for name, code in exited:
                delay = restarts.schedule(name, now)
                if delay is None:
                    log.error(
                        "component keeps failing; stopping the system",
                        extra={"component": name, "code": code, "restarts": restarts.max_restarts,
                               "window_seconds": restarts.window},
                    )  # fmt: skip
                    return 1
                log.warning(
                    "component exited; restarting it",
                    extra={"component": name, "code": code, "in_seconds": delay},
                )
                due[name] = now + delay
            for name, at in list(due.items()):
                if at > now or stopping:
                    continue
                del due[name]
                if name == "database" and database is not None:
                    try:
                        database = _restart_database(database)
                    except EmbeddedMongoError:
                        log.error("embedded database did not start again", exc_info=True)
                        database.proc = None
                        return 1
                else:
                    children[name] = _spawn(name, commands[name], env)
                log.warning("component restarted", extra={"component": name})
            time.sleep(0.2)
        return 0
    finally:
        _stop_all(children)
        if database is not None:
            uri_file.unlink(missing_ok=True)
            database.stop()
        log.info("system stopped")
