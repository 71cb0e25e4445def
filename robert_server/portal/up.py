"""What ``robert up`` prepares for the portal: the dev provider's packages, the portal's issuer token.

The token is made once with ``issuers.add`` (like ``robert issuers add prostopcovid-dev-...``) and kept
in ``<data_dir>/portal/issuer_token`` (mode 0600) for the next runs on the same database; a token the
database no longer knows is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

from robert_common.clock import Clock
from robert_common.files import write_private
from robert_common.mongo import mongo_client
from robert_common.settings import Settings

from .config import load_config
from .devidp import DEV_IDP_DIR

log = logging.getLogger("robert.up")

TOKEN_FILE = "portal/issuer_token"  # noqa: S105 - a file name


async def _new_token_unless_valid(uri: str, settings: Settings, current: str | None) -> str | None:
    """A new issuer token, or None when ``current`` is still a valid one."""
    from robert_server.codes import issuers

    client = mongo_client(uri)
    try:
        db = client[settings.mongodb_database]
        await issuers.ensure_indexes(db)
        if current and await issuers.authenticate(db, current):
            return None
        now = Clock(settings.clock_shift_file).utcnow()
        return await issuers.add(db, f"prostopcovid-dev-{secrets.token_hex(3)}", now)
    finally:
        await client.close()


def _ensure_token(uri: str, settings: Settings, path: Path) -> None:
    current = path.read_text().strip() if path.is_file() else None
    token = asyncio.run(_new_token_unless_valid(uri, settings, current))
    if token is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, (token + "\n").encode())


def _dev_idp_ready() -> bool:
    """node and the provider's packages (installed here with `npm ci` when missing)."""
    if shutil.which("node") is None:
        return False
    if (DEV_IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        return True
    npm = shutil.which("npm")
    if npm is None:
        return False
    log.info("installing the development OIDC provider (npm ci)")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=DEV_IDP_DIR, check=False
    )
    return done.returncode == 0


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp and node bind
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def prepare_portal(settings: Settings, env: dict[str, str], without: Iterable[str]) -> set[str]:
    """Set up what the portal needs in ``env``; returns the components not to start.

    The portal is an optional part of a development system: when its port (or the dev provider's) is
    taken, by another ``robert up`` for instance, it is left out with a warning rather than crash-looping
    and taking the phone API down with it.
    """
    skipped: set[str] = set()
    without = set(without)
    if "portal" in without:
        return {"dev-idp"}
    ports = [
        (
            "127.0.0.1" if settings.portal_host in ("", "0.0.0.0") else settings.portal_host,
            settings.portal_port,
        )
    ]
    if settings.portal_oidc_issuer is None and "dev-idp" not in without:
        ports.append(("127.0.0.1", settings.portal_dev_idp_port))
    busy = [port for host, port in ports if not _port_free(host, port)]
    if busy:
        log.warning("port in use: the portal is not started", extra={"ports": busy})
        return {"dev-idp", "portal"}
    if settings.portal_oidc_issuer is None and "dev-idp" not in without and not _dev_idp_ready():
        log.warning("node or the dev OIDC provider's packages are missing: the portal is not started")
        return {"dev-idp", "portal"}
    if settings.portal_oidc_issuer is not None:
        skipped.add("dev-idp")
    load_config(settings, with_token=False)  # development secrets made once, before two processes race
    if settings.portal_issuer_token is None and settings.portal_issuer_token_file is None:
        path = settings.data_dir / TOKEN_FILE
        _ensure_token(env.get("ROBERT_MONGODB_URI") or str(settings.mongodb_uri), settings, path)
        env["ROBERT_PORTAL_ISSUER_TOKEN_FILE"] = str(path.resolve())
    return skipped
