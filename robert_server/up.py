"""``robert up``: the whole system on one machine, on the embedded defaults.

Starts, in order: the embedded database (only when ROBERT_MONGODB_URI is unset), the internal plane's
development CA and certificates (first start), a development key store (``robert keys init --dev`` as
a process of its own: key code never runs in this one; with ROBERT_KEYSTORE=pkcs11, the keys in the
token if it holds none), then the components: ``robert crypto`` (ROBERT_CRYPTO_PROCESSES of them, on
consecutive ports from ROBERT_CRYPTO_LISTEN's; the API and the matcher spread their calls over them),
``robert codes serve``, ``robert api`` (ROBERT_API_PROCESSES of them sharing the phone port; process i
has its internal app on ROBERT_METRICS_PORT + i), ``robert matcher``, the ProStopCovid portal and its
development provider, and with partner countries configured ``robert federation serve`` and ``robert
federation forward``. Ctrl-C (or SIGTERM) stops the children, then the database.

Secrets only where they are used: each child gets only the settings of its component (``SETTINGS_OF``,
an explicit allow-list: the key-store passphrase reaches the crypto service alone, the codes pepper the
code issuer and the API, which check codes, the JWT keys the API) and only the operating-system
variables of ``OS_ENVIRONMENT``; never a copy of this process's environment.

Supervision: a component that exits is started again after a back-off (0.5 s, doubling up to
``up_restart_backoff_max``), and the log says so; the embedded database is watched the same way and
started again on the same port and data folder, so the components' URI stays valid. Only a component
(or the database) that needs more than ``up_max_restarts`` restarts within ``up_restart_window`` seconds
stops the whole system, with a non-zero exit: a crash loop is worse than a stopped system.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from robert_common import tls
from robert_common.files import write_private
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


# Which settings each component's process receives (fnmatch patterns over setting names). A setting
# named by no pattern of a component never reaches it. Every component also gets COMMON_SETTINGS.
COMMON_SETTINGS = (
    "data_dir", "time_start", "country_code", "clock_shift_file", "log_level",
    "grpc_tls_dir", "grpc_tls_ca", "grpc_plaintext",
)  # fmt: skip
SETTINGS_OF: dict[str, tuple[str, ...]] = {
    # the only holder of the key store: passphrase (or PKCS#11 PIN), KEK, server keys
    "crypto": (
        "mongodb_uri", "crypto_mongodb_database", "crypto_listen", "crypto_metrics_port", "metrics_host",
        "keystore*", "key_retention_days", "bundle_days", "hello_tolerance", "pkcs11_*", "kek_*",
    ),
    # stores codes: the pepper
    "codes": ("mongodb_uri", "mongodb_database", "codes_*"),
    # checks codes at /report (the pepper) and signs JWTs (their keys)
    "api": (
        "mongodb_uri", "mongodb_database", "http_*", "metrics_host", "metrics_port", "crypto_address",
        "api_processes", "api_max_in_progress", "api_retry_after_max", "report_*", "trusted_proxies",
        "crypto_timeout", "bundle_days", "status_*", "request_time_tolerance", "captcha*",
        "api_request_deadline", "report_max_body_bytes", "jwt_issuer", "*_token_key_file",
        "*_token_lifetime", "codes_*",
    ),
    "matcher": (
        "mongodb_uri", "mongodb_database", "crypto_address", "crypto_timeout", "hello_tolerance",
        "contagious_period_days", "risk_*", "scoring_*", "matcher_*", "identity_orphan_grace_hours",
    ),
    "portal": ("mongodb_uri", "mongodb_database", "codes_address", "codes_timezone", "portal_*"),
    "dev-idp": ("portal_*",),
    # the federation service and its forwarder: their own TLS with partner countries (federation_*)
    "federation": ("mongodb_uri", "mongodb_database", "contagious_period_days", "metrics_host",
                   "federation_*"),
    "forwarder": ("mongodb_uri", "mongodb_database", "contagious_period_days", "metrics_host",
                  "federation_*"),
    "none": (),
}  # fmt: skip
SETTINGS_OF["keys"] = SETTINGS_OF["crypto"]  # the `robert keys init --dev` step
# Operating-system variables children keep (interpreter, locale, libfaketime, the PKCS#11 token's file).
OS_ENVIRONMENT = (
    "PATH", "HOME", "USER", "LANG", "LC_*", "TZ", "TMPDIR", "PYTHON*", "VIRTUAL_ENV",
    "LD_PRELOAD", "LD_LIBRARY_PATH", "FAKETIME*", "DONT_FAKE_MONOTONIC", "SOFTHSM2_CONF",
)  # fmt: skip
# Settings robert up never hands down: one process's own TLS files (children use <tls dir>/<name>.*)
NEVER_PASSED = ("grpc_tls_cert", "grpc_tls_key")


def settings_environment(settings: Settings) -> dict[str, str]:
    """Every set setting as its ROBERT_* variable (the values robert up hands down, before filtering):
    secrets in clear, lists and mappings (of models too) as JSON, booleans as true/false."""
    dumped = settings.model_dump(mode="json")  # JSON-able values; secrets masked (taken from the object)
    out = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None or name in NEVER_PASSED:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(dumped[name], dict | list):
            text = json.dumps(dumped[name])
        else:
            text = str(dumped[name])
        out[f"ROBERT_{name.upper()}"] = text
    return out


def child_environment(component: str, values: dict[str, str], environ: dict[str, str]) -> dict[str, str]:
    """The environment of ``component``'s process: its allowed ROBERT_* ``values`` and the allowed
    operating-system variables of ``environ``; nothing else (KeyError for an unknown component)."""
    patterns = (*COMMON_SETTINGS, *SETTINGS_OF[component])
    env = {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in OS_ENVIRONMENT)}
    for key, value in values.items():
        name = key.removeprefix("ROBERT_").lower()
        if key.startswith("ROBERT_") and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            env[key] = value
    return env


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="start the whole system on this machine (embedded defaults)")
    p.add_argument(
        "--without", action="append", default=[], choices=[name for name, _ in COMPONENTS],
        help="do not start this component (repeatable)",
    )  # fmt: skip
    p.set_defaults(func=run)


def _with_port(address: str, offset: int) -> str:
    host, port = address.rsplit(":", 1)
    return f"{host}:{int(port) + offset}"


def instances(settings: Settings, name: str) -> list[tuple[str, dict[str, str]]]:
    """The processes of component ``name``: a name for each (``api``, ``api.2``...) and the settings it
    gets on top of the common environment."""
    if name == "crypto" and settings.crypto_processes > 1:
        listens = [_with_port(settings.crypto_listen, i) for i in range(settings.crypto_processes)]
        metrics = settings.crypto_metrics_port
        return [
            (
                "crypto" if i == 0 else f"crypto.{i + 1}",
                {"ROBERT_CRYPTO_LISTEN": listen}
                | ({} if metrics is None else {"ROBERT_CRYPTO_METRICS_PORT": str(metrics + i)}),
            )
            for i, listen in enumerate(listens)
        ]
    if name == "api" and settings.api_processes > 1:
        return [
            ("api" if i == 0 else f"api.{i + 1}", {"ROBERT_METRICS_PORT": str(settings.metrics_port + i)})
            for i in range(settings.api_processes)
        ]
    return [(name, {})]


def crypto_addresses(settings: Settings) -> str:
    """ROBERT_CRYPTO_ADDRESS for the clients: every crypto process when there are several (reached on the
    loopback when they listen on every interface), else the address as configured."""
    if settings.crypto_processes == 1:
        return settings.crypto_address
    host = settings.crypto_listen.rsplit(":", 1)[0]
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    port = int(settings.crypto_listen.rsplit(":", 1)[1])
    return ",".join(f"{host}:{port + i}" for i in range(settings.crypto_processes))


def _spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``name``; ``env``: the ROBERT_* values of the system (filtered by child_environment)."""
    log.info("starting component", extra={"component": name})
    child_env = child_environment(name.split(".")[0], env, _OS_ENVIRON)  # api.2 is an api
    return subprocess.Popen([sys.executable, "-m", "robert_server.cli", *args], env=child_env)


_OS_ENVIRON: dict[str, str] = {}  # the OS_ENVIRONMENT variables of this process as started (run())


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


def _prepare(settings: Settings, env: dict[str, str]) -> None:
    """Development conveniences: the internal plane's CA and one certificate per component when no CA
    is configured nor found (mutual TLS); a key store (and its passphrase file) when none exists, made by
    ``robert keys init --dev`` in a process of its own, with the crypto service's settings only."""
    _prepare_certs(settings)
    done = subprocess.run(
        [sys.executable, "-m", "robert_server.cli", "keys", "init", "--dev"],
        env=child_environment("keys", env, _OS_ENVIRON), check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"robert: the key store step (robert keys init --dev) failed ({done.returncode})")


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
    # Children get only what they need (child_environment): this process keeps the settings object
    # and the OS_ENVIRONMENT variables only, so the embedded database inherits nothing else either.
    env = settings_environment(settings)
    _OS_ENVIRON.update(child_environment("none", {}, dict(os.environ)))
    os.environ.clear()
    os.environ.update(_OS_ENVIRON)
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
            write_private(uri_file, (env["ROBERT_MONGODB_URI"] + "\n").encode())
            log.info("embedded database started", extra={"data": str(settings.data_dir / "mongo")})
        _prepare(settings, env)
        from robert_server.portal.up import prepare_portal

        skipped = prepare_portal(settings, env, args.without)
        env["ROBERT_CRYPTO_ADDRESS"] = crypto_addresses(settings)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {}  # process -> command, its own settings
        for component, cmd in COMPONENTS:
            if component in FEDERATION_COMPONENTS and not settings.federation_partners:
                continue
            if component not in args.without and component not in skipped:
                for name, own in instances(settings, component):
                    commands[name] = (cmd, own)
                    children[name] = _spawn(name, cmd, env | own)
        log.info(
            "system up",
            extra={"api": f"http://{settings.http_host}:{settings.http_port}/api/v6",
                   "internal": f"http://{settings.metrics_host}:{settings.metrics_port}/health",
                   "portal": f"http://localhost:{settings.portal_port}/"},
        )  # fmt: skip
        restarts = Restarts(settings)
        due: dict[str, float] = {}  # component (or "database") -> when to start it again
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
                    cmd, own = commands[name]
                    children[name] = _spawn(name, cmd, env | own)
                log.warning("component restarted", extra={"component": name})
            time.sleep(0.2)
        return 0
    finally:
        _stop_all(children)
        if database is not None:
            uri_file.unlink(missing_ok=True)
            database.stop()
        log.info("system stopped")
