"""Fixtures of the portal tests: every part real and on 127.0.0.1.

``portal``: the real phone API (``api_server``, with the real code verifier), the real CodeIssuer gRPC
server with an issuer token for the portal, the development OIDC provider (node, npm oidc-provider)
with the portal registered as its client, and the portal app on its own ManualClock (started at the
real time: the provider signs tokens with the real time). ``browser``: Debian's Chromium driven by
Playwright (no downloaded browser).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from robert_common.clock import ManualClock
from robert_common.settings import Settings, load_settings
from robert_server.codes import issuers, make_verifier
from robert_server.codes.server import start_server
from robert_server.portal.app import create_app
from robert_server.portal.devidp import DevIdp
from tests.fixtures.codes import CODES_PEPPER

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP localhost 127.0.0.1",
]  # fmt: skip
CLIENT_ID = "robert-portal"
CLIENT_SECRET = "test-client-secret-0123456789"
AUDIT_KEY = "test-audit-key-0123456789abcdef"
# Screenshots go to a temporary folder; `ROBERT_PORTAL_SCREENSHOTS=docs/portal pytest ...` refreshes the
# README's (a test run must leave the work tree clean: each run shows other codes).
SCREENSHOTS_ENV = "ROBERT_PORTAL_SCREENSHOTS"


@dataclass
class PortalHandle:
    url: str  # http://localhost:<port>, what the browser uses
    settings: Settings
    clock: ManualClock
    idp: DevIdp
    api: Any  # the api_server fixture
    issuer_server: Any
    db: Any
    app: web.Application

    def restart_idp(self) -> None:
        self.idp.stop()
        self.idp.start()


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def portal(api_server: Any, request: pytest.FixtureRequest) -> AsyncIterator[PortalHandle]:
    db, settings = api_server.db, api_server.settings
    api_server.use_verifier(make_verifier(db, settings, api_server.clock))
    server, port, service = await start_server(db, settings, api_server.clock, listen="127.0.0.1:0")
    token = await issuers.add(db, "prostopcovid", service.now())
    sock = _bound_socket()
    url = f"http://localhost:{sock.getsockname()[1]}"
    idp = DevIdp(0, CLIENT_ID, CLIENT_SECRET, [url + "/auth/callback"], [url + "/logged-out"])
    idp.start()
    marker = request.node.get_closest_marker("portal_settings")
    portal_settings = load_settings(**{
        **settings.model_dump(),
        "codes_address": f"127.0.0.1:{port}",
        "portal_public_url": url,
        "portal_oidc_issuer": idp.url,
        "portal_oidc_client_id": CLIENT_ID,
        "portal_oidc_client_secret": CLIENT_SECRET,
        "portal_audit_key": AUDIT_KEY,
        "portal_issuer_token": token,
        "portal_oidc_timeout": 5.0,
        "portal_codes_timeout": 5.0,
        **(marker.kwargs if marker else {}),
    })  # fmt: skip
    clock = ManualClock(time.time())
    app = create_app(portal_settings, clock=clock, db=db)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    handle = PortalHandle(url, portal_settings, clock, idp, api_server, server, db, app)
    try:
        yield handle
    finally:
        await runner.cleanup()
        idp.stop()
        await handle.issuer_server.stop(None)


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Awaitable[None]]:
    """``await shots(page, name)``: a full-page PNG of the page."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path_factory.mktemp("portal-shots"))
    folder.mkdir(parents=True, exist_ok=True)

    async def shot(page: Any, name: str) -> None:
        await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return shot


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 900, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        await context.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "portal_settings(**kw): settings overrides of the portal fixture")


__all__ = ["CODES_PEPPER"]
