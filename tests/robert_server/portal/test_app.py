"""The portal over HTTP without a browser: headers, cookies, CSRF, bad input, provider down."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from robert_common.clock import ManualClock
from robert_common.mongo import free_port
from robert_common.settings import load_settings
from robert_server.portal.app import SESSION_COOKIE, create_app
from robert_server.portal.config import load_config
from robert_server.portal.sessions import COLLECTION as SESSIONS


@pytest.fixture
async def app_url(db, tmp_path, test_pki) -> AsyncIterator[str]:
    settings = load_settings(
        data_dir=tmp_path, portal_public_url="http://localhost:1", portal_issuer_token="t" * 32,
        portal_oidc_issuer=f"http://127.0.0.1:{free_port()}", portal_oidc_timeout=0.5,
        codes_address=f"127.0.0.1:{free_port()}", mongodb_database=db.name, grpc_tls_dir=test_pki,
    )  # fmt: skip
    app = create_app(settings, clock=ManualClock(time.time()), db=db, config=load_config(settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def session_cookie(r: aiohttp.ClientResponse) -> str:
    header = r.headers.getall("Set-Cookie")
    [cookie] = [c for c in header if c.startswith(SESSION_COOKIE + "=")]
    return cookie


async def test_pages_carry_a_strict_csp_and_no_inline_script(app_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(app_url + "/") as r:
        assert r.status == 200
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert (
            r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
        )
        html = await r.text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/portal.js" defer>']
    assert " style=" not in html and "<style" not in html
    assert '<html lang="fr">' in html


async def test_provider_down_is_said_plainly_and_the_breaker_opens(app_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            async with http.get(app_url + "/login", allow_redirects=False) as r:
                assert r.status == 503
                assert "Pro Santé Connect est indisponible" in await r.text()
                cookie = session_cookie(r)
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        async with http.get(app_url + "/health") as r:
            assert (await r.json())["provider"] == "open"


async def test_posts_without_the_csrf_token_are_refused(app_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(app_url + "/codes", data={"csrf": "x"}) as r:
            assert r.status == 403 and "Requête refusée" in await r.text()
        async with http.get(app_url + "/login/fallback") as r:
            cookie = session_cookie(r).split(";")[0]
            token = re.search(r'name="csrf-token" content="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
        for headers in ({"Cookie": cookie}, {"Cookie": cookie, "X-CSRF-Token": "wrong"}):
            async with http.post(app_url + "/passkey/login/options", headers=headers) as r:
                assert r.status == 403
        async with http.post(
            app_url + "/passkey/login/options", headers={"Cookie": cookie, "X-CSRF-Token": token}
        ) as r:
            assert r.status == 200 and (await r.json())["userVerification"] == "required"
        # Bad answers to the challenge: a clear refusal, never a stack trace.
        ok = {"Cookie": cookie, "X-CSRF-Token": token}
        async with http.post(app_url + "/passkey/login/verify", headers=ok, data=b"{not json") as r:
            assert r.status == 400
        async with http.post(app_url + "/passkey/login/verify", headers=ok, data=b'{"rawId": "AAAA"}') as r:
            assert r.status == 400  # the challenge was used up by the previous try
        async with http.post(app_url + "/passkey/login/options", headers=ok) as r:
            assert r.status == 200
        async with http.post(app_url + "/passkey/login/verify", headers=ok, data=b'{"rawId": "AAAA"}') as r:
            assert r.status == 401 and (await r.json()) == {"error": "login refused"}
        async with http.post(app_url + "/passkey/login/verify", headers=ok, data=b"x" * 20000) as r:
            assert r.status == 413


async def test_bad_requests_get_plain_pages(app_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(app_url + "/lang/de") as r:
            assert r.status == 404 and "Page introuvable" in await r.text()
        async with http.get(app_url + "/auth/callback?code=x&state=y") as r:
            assert r.status == 401  # no session: the login has to start again
        async with http.get(app_url + "/login/fallback") as r:
            cookie = session_cookie(r).split(";")[0]
        async with http.get(app_url + "/auth/callback?code=x&state=y", headers={"Cookie": cookie}) as r:
            assert r.status == 400 and "Connexion impossible" in await r.text()
        async with http.post(app_url + "/codes", headers={"Cookie": cookie}, data={"csrf": "x"}) as r:
            assert r.status == 403
        async with http.get(app_url + "/lang/en", allow_redirects=False) as r:
            assert r.status == 303
            lang = r.headers["Set-Cookie"].split(";")[0]
        async with http.get(app_url + "/", headers={"Cookie": lang}) as r:
            assert '<html lang="en">' in await r.text()


async def test_callback_from_another_issuer_is_refused(app_url: str, db) -> None:
    """RFC 9207: the ``iss`` of the authorization response must be our provider (mix-up defence)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(app_url + "/login/fallback") as r:
            cookie = session_cookie(r).split(";")[0]
        token = cookie.split("=", 1)[1]
        pending = {"state": "s" * 20, "nonce": "n", "verifier": "v"}
        key = hashlib.sha256(token.encode()).hexdigest()
        statuses = []
        for iss in ("https://evil.example", None):
            await db[SESSIONS].update_one({"_id": key}, {"$set": {"oidc": pending}})
            query = {"code": "c", "state": pending["state"], **({"iss": iss} if iss else {})}
            async with http.get(app_url + "/auth/callback", params=query, headers={"Cookie": cookie}) as r:
                statuses.append(r.status)
    # Another issuer: refused at once. Ours (or none said): the code goes to the provider, down here.
    assert statuses == [400, 503]
