"""The portal in a real browser (Debian's Chromium through Playwright) against real parts: the node
OIDC provider, the CodeIssuer gRPC server, the phone API, the database. Each page met is saved as a
screenshot under docs/portal/ (the README shows them)."""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp
import pytest

from robert_server.codes.server import start_server
from robert_server.portal import audit
from tests.robert_server.portal.conftest import AUDIT_KEY, PortalHandle

CODE_RE = re.compile(r"^[A-Z0-9]{6}$")


async def provider_login(page: Any, portal: PortalHandle, user: str) -> None:
    await page.goto(portal.url + "/")
    await page.get_by_role("link", name="Se connecter avec Pro Santé Connect").click()
    await idp_form(page, portal, user)


async def idp_form(page: Any, portal: PortalHandle, user: str) -> None:
    await page.wait_for_url(portal.idp.url + "/interaction/**")
    await page.get_by_label("Login").fill(user)
    await page.get_by_label("Password").fill("secret")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(portal.url + "/**")


async def generate(page: Any) -> str:
    await page.get_by_role("button", name="Générer un code").click()
    await page.wait_for_selector("#code")
    code = await page.get_attribute("#code", "data-code")
    assert code is not None and CODE_RE.match(code)
    return code


async def report_with(portal: PortalHandle, code: str) -> tuple[int, int]:
    """Register a simulator phone that heard another, report with ``code`` twice: the two statuses."""
    async with aiohttp.ClientSession() as http:
        alice, bob = portal.api.phone(http), portal.api.phone(http)
        assert (await alice.register()).status == 201
        assert (await bob.register()).status == 201
        bob.hear(alice.hello(), rssi=-55)
        first = (await bob.report(code)).status
        second = (await bob.report(code)).status
    return first, second


async def test_doctor_gets_a_code_that_reports_once(
    page: Any, portal: PortalHandle, shots: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    await page.goto(portal.url + "/")
    await shots(page, "1-login")
    await provider_login(page, portal, "doctor")
    assert await page.locator("h1").inner_text() == "Générer le code d'un patient"
    await shots(page, "2-home")
    code = await generate(page)
    assert code not in page.url
    assert await page.locator(".qr svg").count() == 1
    assert "(60 minutes)" in await page.locator("#expiry").inner_text()
    await shots(page, "3-code")
    await page.emulate_media(media="print")
    assert not await page.locator("#print").is_visible()  # the print view hides the buttons
    await shots(page, "4-code-print")
    await page.emulate_media(media="screen")

    assert await report_with(portal, code) == (200, 401)  # accepted, then refused: single use

    [pro] = {r["pro"] for r in await portal.db[audit.AUDIT].find({}).to_list()}
    records = await audit.records(portal.db, pro)
    assert len(records) == 1 and records[0]["fallback"] is False
    assert records[0]["code_hash"] == audit.code_hash(AUDIT_KEY.encode(), code)
    assert pro == audit.pro_hash(AUDIT_KEY.encode(), "810000000001")  # the doctor's id, hashed

    assert not [m for m in console if "Content Security Policy" in m]  # the pages obey their own CSP
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "code issued" in logged
    assert code not in logged and "810000000001" not in logged  # no code, no identifier in the logs


async def virtual_authenticator(page: Any) -> Any:
    """A platform authenticator with a passkey store, user verified, presence automatic (CDP)."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable")
    await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True,
    }})  # fmt: skip
    return cdp


async def test_provider_down_then_fallback_passkey_login(page: Any, portal: PortalHandle, shots: Any) -> None:
    await virtual_authenticator(page)
    await provider_login(page, portal, "doctor")
    await page.get_by_role("button", name="Enregistrer une clé d'accès").click()
    await page.get_by_text("Clé d'accès enregistrée.").wait_for()

    portal.idp.stop()  # Pro Santé Connect goes down mid-session
    await page.get_by_role("button", name="Se déconnecter").click()
    await page.wait_for_url(portal.url + "/logged-out")  # local logout, the provider being unreachable
    await shots(page, "7-logged-out")
    await page.get_by_role("link", name="Se connecter avec Pro Santé Connect").click()
    assert await page.locator("h1").inner_text() == "Pro Santé Connect est indisponible"
    assert "clé d'accès de secours" in await page.locator("#message").inner_text()
    await shots(page, "5-provider-down")

    await page.get_by_role("link", name="Se connecter avec une clé d'accès (secours)").click()
    await shots(page, "6-fallback-login")
    await page.get_by_role("button", name="Utiliser ma clé d'accès").click()
    await page.wait_for_url(portal.url + "/")
    assert "connexion de secours" in await page.locator("header").inner_text()
    code = await generate(page)
    [record] = await portal.db[audit.AUDIT].find({}).to_list()
    assert record["fallback"] is True
    assert record["code_hash"] == audit.code_hash(AUDIT_KEY.encode(), code)
    assert record["pro"] == audit.pro_hash(AUDIT_KEY.encode(), "810000000001")


async def test_keyboard_only_on_a_phone_screen(page: Any, portal: PortalHandle, shots: Any) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    await provider_login(page, portal, "doctor")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Aller au contenu"  # skip link first
    for _ in range(8):  # then the generate button, a few Tabs away
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "generate":
            break
    else:
        raise AssertionError("the generate button cannot be reached with Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#code")
    code = await page.get_attribute("#code", "data-code")
    assert code is not None and await page.get_attribute("#code", "aria-label") == " ".join(
        code
    )  # read one by one
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone's screen
    await shots(page, "3-code-phone")


async def test_fallback_login_without_a_passkey_fails_plainly(page: Any, portal: PortalHandle) -> None:
    await virtual_authenticator(page)  # an authenticator that holds no passkey for this site
    await page.goto(portal.url + "/login/fallback")
    await page.get_by_role("button", name="Utiliser ma clé d'accès").click()
    await page.get_by_text("La clé d'accès n'a pas pu être utilisée.").wait_for()
    assert page.url == portal.url + "/login/fallback"


async def test_nurse_allowed_in_english_and_logout_ends_the_provider_session(
    page: Any, portal: PortalHandle
) -> None:
    await provider_login(page, portal, "nurse")
    await page.get_by_role("link", name="English").click()
    assert await page.locator("h1").inner_text() == "Generate a patient's code"
    await page.get_by_role("button", name="Generate a code").click()
    code = await page.get_attribute("#code", "data-code")
    assert code is not None and CODE_RE.match(code)
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(portal.url + "/logged-out?state=*")  # back from the provider's end_session
    await page.get_by_role("link", name="Log in with Pro Santé Connect").click()
    await page.wait_for_url(portal.idp.url + "/interaction/**")  # the provider asks again
    assert await page.get_by_label("Login").is_visible()


async def test_profession_not_allowed_is_refused(page: Any, portal: PortalHandle, shots: Any) -> None:
    await provider_login(page, portal, "pharmacist")
    assert await page.locator("h1").inner_text() == "Accès réservé"
    await shots(page, "8-refused")
    await page.goto(portal.url + "/")
    assert await page.get_by_role("link", name="Se connecter avec Pro Santé Connect").is_visible()
    assert await portal.db[audit.AUDIT].count_documents({}) == 0


async def test_csrf_token_is_required(page: Any, portal: PortalHandle, shots: Any) -> None:
    await provider_login(page, portal, "doctor")
    # Same cookies as the page, without (then with a wrong) token: refused, no code issued.
    for form in ({}, {"csrf": "not-the-token"}):
        r = await page.request.post(portal.url + "/codes", form=form, max_redirects=0)
        assert r.status == 403
        assert "Requête refusée" in await r.text()
    token = await page.get_attribute('meta[name="csrf-token"]', "content")
    r = await page.request.post(portal.url + "/codes", form={"csrf": token})
    assert r.status == 200 and 'id="code"' in await r.text()
    assert await portal.db[audit.AUDIT].count_documents({}) == 1


async def test_session_expires_after_idle_time(page: Any, portal: PortalHandle, shots: Any) -> None:
    await provider_login(page, portal, "doctor")
    portal.clock.advance(portal.settings.portal_session_idle_minutes * 60 - 5)
    await page.reload()
    assert await page.locator("h1").inner_text() == "Générer le code d'un patient"
    portal.clock.advance(portal.settings.portal_session_idle_minutes * 60 + 1)
    await page.get_by_role("button", name="Générer un code").click()
    assert await page.locator("h1").inner_text() == "Session expirée"
    assert await page.locator("#code").count() == 0
    await shots(page, "9-expired")
    await page.goto(portal.url + "/")
    assert await page.get_by_role("link", name="Se connecter avec Pro Santé Connect").is_visible()


async def test_issuer_down_shows_no_code_then_retries(page: Any, portal: PortalHandle, shots: Any) -> None:
    await provider_login(page, portal, "doctor")
    address = portal.settings.codes_address
    await portal.issuer_server.stop(None)
    await page.get_by_role("button", name="Générer un code").click()
    assert await page.locator("h1").inner_text() == "Service des codes injoignable"
    assert await page.locator("#code").count() == 0
    await page.get_by_text("Nouvel essai automatique dans 10 secondes.").wait_for()
    await shots(page, "10-issuer-down")
    assert await portal.db[audit.AUDIT].count_documents({}) == 0

    server, _, _ = await start_server(portal.db, portal.api.settings, portal.api.clock, listen=address)
    portal.issuer_server = server  # stopped by the fixture
    # No click: the page tries again by itself, and this time the code is stored, then shown.
    await page.wait_for_selector("#code", timeout=30_000)
    code = await page.get_attribute("#code", "data-code")
    assert code is not None and CODE_RE.match(code)
    assert await portal.db[audit.AUDIT].count_documents({}) == 1
    assert await page.evaluate("sessionStorage.getItem('portal-retries')") is None  # reset for next time


async def test_the_retry_button_works_at_once(page: Any, portal: PortalHandle) -> None:
    await provider_login(page, portal, "doctor")
    address = portal.settings.codes_address
    await portal.issuer_server.stop(None)
    await page.get_by_role("button", name="Générer un code").click()
    assert await page.locator("#code").count() == 0
    server, _, _ = await start_server(portal.db, portal.api.settings, portal.api.clock, listen=address)
    portal.issuer_server = server
    await page.get_by_role("button", name="Réessayer").click()
    code = await page.get_attribute("#code", "data-code")
    assert code is not None and CODE_RE.match(code)


@pytest.mark.portal_settings(portal_codes_per_hour=1)
async def test_the_hourly_limit_per_professional(page: Any, portal: PortalHandle, shots: Any) -> None:
    await provider_login(page, portal, "doctor")
    await generate(page)
    await page.get_by_role("button", name="Générer un autre code").click()
    assert await page.locator("h1").inner_text() == "Limite atteinte"
    assert "par heure" in await page.locator("#message").inner_text()
    assert await page.locator("#code").count() == 0
    await shots(page, "11-limit")
    assert await portal.db[audit.AUDIT].count_documents({}) == 1  # the next hour: test_audit.py
