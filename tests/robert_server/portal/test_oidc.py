"""The OIDC relying party against the real development provider (node, npm oidc-provider), over HTTP:
PKCE, nonce, single-use codes, JWKS key rotation and its rate limit, expiry by the portal's clock, the
breaker when the provider is down and its single probe when it is back."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from robert_common.clock import ManualClock
from robert_common.mongo import free_port
from robert_common.settings import SettingsError, load_settings
from robert_server.portal.breaker import CircuitBreaker
from robert_server.portal.config import load_config, public_jwks
from robert_server.portal.devidp import DevIdp
from robert_server.portal.oidc import LoginError, OidcClient, ProviderUnavailable, professions_of

REDIRECT = "http://localhost:9/auth/callback"  # registered at the provider, never fetched
SECRET = "oidc-test-secret-0123456789"


@pytest.fixture
def idp() -> DevIdp:
    provider = DevIdp(free_port(), "portal", SECRET, [REDIRECT], [])
    provider.start()
    yield provider  # type: ignore[misc]
    provider.stop()


@pytest.fixture
async def rp(idp: DevIdp) -> AsyncIterator[OidcClient]:
    clock = ManualClock(time.time())
    async with aiohttp.ClientSession() as http:
        yield OidcClient(
            http, clock, CircuitBreaker(clock, 3, 30.0), issuer=idp.url, client_id="portal",
            client_secret=SECRET, redirect_uri=REDIRECT, scopes="openid scope_all", acr_values="eidas1",
            id_claim="SubjectNameID", timeout=2.0,
        )  # fmt: skip


async def authorize(url: str, user: str = "doctor") -> dict[str, str]:
    """What a browser does between the authorization URL and the callback: the query of the callback."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        method, data = "GET", None
        for _ in range(12):
            async with http.request(method, url, data=data, allow_redirects=False) as r:
                body = await r.text()
                location = r.headers.get("Location")
            if location and location.startswith(REDIRECT):
                return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
            if location:
                url = (
                    location
                    if location.startswith("http")
                    else f"{urlsplit(url).scheme}://{urlsplit(url).netloc}{location}"
                )
                method, data = "GET", None
                continue
            action = re.search(r'<form method="post" action="([^"]+)"', body)
            assert action is not None, body[:300]
            url = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}{action.group(1)}"
            method, data = "POST", {"login": user, "password": "secret"}
    raise AssertionError("no callback")


async def login(rp: OidcClient, user: str = "doctor"):  # type: ignore[no-untyped-def]
    start = await rp.start()
    back = await authorize(start.url, user)
    assert back["state"] == start.state
    return start, back["code"]


async def test_login_gives_the_identifier_and_professions(rp: OidcClient) -> None:
    start = await rp.start()
    query = parse_qs(urlsplit(start.url).query)
    assert query["code_challenge_method"] == ["S256"] and query["acr_values"] == ["eidas1"]
    assert query["nonce"] == [start.nonce] and query["scope"] == ["openid scope_all"]
    assert start.verifier not in start.url
    back = await authorize(start.url, "nurse")
    pro = await rp.finish(back["code"], start.nonce, start.verifier)
    assert pro.identifier == "810000000002"
    assert pro.professions == {"60"}
    assert pro.name == "Florence Nightingale"


async def test_nonce_verifier_and_single_use_code(rp: OidcClient) -> None:
    start, code = await login(rp)
    with pytest.raises(LoginError, match="token: HTTP 400"):  # PKCE: the wrong verifier
        await rp.finish(code, start.nonce, "x" * 43)
    start, code = await login(rp)
    with pytest.raises(LoginError, match="nonce"):
        await rp.finish(code, "another nonce", start.verifier)
    start, code = await login(rp)
    await rp.finish(code, start.nonce, start.verifier)
    with pytest.raises(LoginError, match="token: HTTP 400"):  # a code works once
        await rp.finish(code, start.nonce, start.verifier)


async def test_key_rotation_refetches_the_jwks_at_most_every_ten_seconds(rp: OidcClient, idp: DevIdp) -> None:
    start, code = await login(rp)
    await rp.finish(code, start.nonce, start.verifier)
    idp.stop()
    idp.start()  # same port, new signing key
    start, code = await login(rp)
    with pytest.raises(LoginError, match="unknown key"):  # the JWKS was fetched less than 10 s ago
        await rp.finish(code, start.nonce, start.verifier)
    rp.clock.advance(10)  # type: ignore[attr-defined]
    start, code = await login(rp)
    pro = await rp.finish(code, start.nonce, start.verifier)  # unknown kid: JWKS refetched
    assert pro.professions == {"10"}


async def test_an_expired_id_token_is_refused(rp: OidcClient) -> None:
    start, code = await login(rp)
    rp.clock.advance(3600)  # type: ignore[attr-defined]
    with pytest.raises(LoginError, match="expired"):
        await rp.finish(code, start.nonce, start.verifier)


async def test_a_provider_down_opens_the_breaker_and_one_probe_closes_it(rp: OidcClient, idp: DevIdp) -> None:
    idp.stop()
    for _ in range(3):
        with pytest.raises(ProviderUnavailable, match="Client"):  # connection refused
            await rp.start()
    assert rp.breaker.state == "open"
    idp.start()
    with pytest.raises(ProviderUnavailable, match="circuit open"):  # no call while open
        await rp.start()
    rp.clock.advance(30)  # type: ignore[attr-defined]
    start = await rp.start()  # the probe
    assert rp.breaker.state == "closed" and start.url.startswith(idp.url)


async def test_a_discovery_document_of_another_issuer_is_refused(idp: DevIdp) -> None:
    clock = ManualClock(time.time())
    async with aiohttp.ClientSession() as http:
        other = idp.url.replace("127.0.0.1", "localhost")
        rp = OidcClient(
            http, clock, CircuitBreaker(clock, 3, 30.0), issuer=other, client_id="portal",
            client_secret=SECRET, redirect_uri=REDIRECT, scopes="openid", acr_values="", id_claim="sub",
            timeout=2.0,
        )  # fmt: skip
        with pytest.raises(LoginError, match="issuer mismatch"):
            await rp.start()


def test_professions_of_reads_only_well_formed_exercices() -> None:
    assert professions_of(
        {"SubjectRefPro": {"exercices": [{"codeProfession": "10"}, {"codeProfession": 60}]}}
    ) == {"10"}
    assert professions_of({"SubjectRefPro": "10"}) == set()
    assert professions_of({}) == set()


async def test_a_probe_cut_short_does_not_leave_the_breaker_half_open_forever() -> None:
    """Regression: a cancelled call (the browser went away) must still be reported to the breaker."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    clock = ManualClock(time.time())
    try:
        async with aiohttp.ClientSession() as http:
            rp = OidcClient(
                http, clock, CircuitBreaker(clock, 1, 30.0), issuer=url, client_id="portal",
                client_secret=SECRET, redirect_uri=REDIRECT, scopes="openid", acr_values="", id_claim="sub",
                timeout=60.0,
            )  # fmt: skip
            for _ in range(2):  # a first call, then the probe, both cancelled in flight
                arrived.clear()
                task = asyncio.create_task(rp.start())
                await arrived.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert rp.breaker.state == "open"
                clock.advance(60)
            assert rp.breaker.allow()  # a new probe may go
    finally:
        release.set()
        await runner.cleanup()


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def test_private_key_jwt_client_authentication(tmp_path) -> None:
    """The client authenticates with a signed assertion (RFC 7523) instead of a secret; another key fails."""
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    provider = DevIdp(free_port(), "portal", "", [REDIRECT], [], client_jwks=public_jwks(_pem(key)))
    provider.start()
    clock = ManualClock(time.time())
    try:
        async with aiohttp.ClientSession() as http:
            results = []
            for pem in (_pem(key), _pem(other)):
                rp = OidcClient(
                    http, clock, CircuitBreaker(clock, 3, 30.0), issuer=provider.url, client_id="portal",
                    client_secret="", client_key=pem, redirect_uri=REDIRECT, scopes="openid scope_all",
                    acr_values="eidas1", id_claim="SubjectNameID", timeout=5.0,
                )  # fmt: skip
                start, code = await login(rp)
                try:
                    results.append((await rp.finish(code, start.nonce, start.verifier)).identifier)
                except LoginError as e:
                    results.append(str(e))
    finally:
        provider.stop()
    assert results == ["810000000001", "token: HTTP 401 invalid_client"]


def test_a_bad_client_key_file_stops_the_start(tmp_path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    settings = load_settings(data_dir=tmp_path, portal_issuer_token="t" * 32, portal_oidc_client_key_file=bad)
    with pytest.raises(
        SettingsError, match="ROBERT_PORTAL_OIDC_CLIENT_KEY_FILE: not an RSA or P-256 PEM key"
    ):
        load_config(settings)
