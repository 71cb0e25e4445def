"""The ProStopCovid web application: ``create_app(settings)`` wires the services and the routes.

Pages are rendered on the server (Jinja2, auto-escaped); the only script is ``static/portal.js``
(print button, passkeys). Every response carries a strict Content Security Policy. Handlers reach
their services through ``request.app[PORTAL]``; errors become plain pages in one middleware.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import secrets
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jinja2
import orjson
import segno
from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from robert_common.clock import Clock
from robert_common.mongo import mongo_client, require_uri
from robert_common.settings import Settings

from . import audit, passkeys
from .breaker import CircuitBreaker
from .config import PortalConfig, issuer_channel_credentials, load_config
from .i18n import DEFAULT, LANGUAGES, translator
from .issuer import IssuerClient, IssuerUnavailable
from .oidc import LoginError, OidcClient, ProviderUnavailable
from .sessions import Session, SessionStore

log = logging.getLogger("robert.portal")

HERE = Path(__file__).parent
SESSION_COOKIE = "__Host-portal"
LANG_COOKIE = "portal_lang"
PURGE_INTERVAL = 3600.0


@dataclass
class Portal:
    settings: Settings
    config: PortalConfig
    clock: Clock
    db: AsyncDatabase
    sessions: SessionStore
    oidc: OidcClient
    issuer: IssuerClient
    templates: jinja2.Environment
    csp: str
    tz: zoneinfo.ZoneInfo


PORTAL = web.AppKey("portal", Portal)
SESSION: web.RequestKey[Session | None] = web.RequestKey("portal_session")  # the cookie's live session
EXPIRED = web.RequestKey("portal_expired", bool)  # the cookie's session timed out


def content_security_policy(issuer: str) -> str:
    """No inline script or style; forms may post here, and a redirect after a form may go to the provider."""
    parts = urlsplit(issuer)
    provider = f"{parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; form-action 'self' {provider}; frame-ancestors 'none'; base-uri 'none'"
    )


# --- rendering -----------------------------------------------------------------------------------


def lang_of(request: web.Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, DEFAULT)
    return lang if lang in LANGUAGES else DEFAULT


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    portal = request.app[PORTAL]
    session = request.get(SESSION)
    lang = lang_of(request)
    user = None
    if session is not None and session.logged_in:
        user = {"name": session.doc.get("name") or "", "fallback": bool(session.doc.get("fallback"))}
    html = portal.templates.get_template(template).render(
        t=translator(lang), lang=lang, csrf=session.csrf if session else "", user=user, **values
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def message(
    request: web.Request, status: int, key: str, *, text: str | None = None, **flags: bool
) -> web.Response:
    """A page saying one thing, with the actions that make sense after it (retry, fallback, login)."""
    actions = {"retry_codes": False, "fallback": False, "login": False, **flags}
    return render(request, "message.html", status, title=f"{key}_title", message=text or key, **actions)


def redirect(location: str) -> web.Response:
    """303 See Other: after a form, the browser follows with a GET."""
    return web.Response(status=303, headers={"Location": location})


def set_session_cookie(response: web.StreamResponse, portal: Portal, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE, session.token, path="/", secure=True, httponly=True, samesite="Lax",
        max_age=int(portal.sessions.absolute),
    )  # fmt: skip


# --- middlewares ---------------------------------------------------------------------------------


@web.middleware
async def security_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Headers of every response, and errors as plain pages (never a stack trace)."""
    portal = request.app[PORTAL]
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = message(request, 404, "not_found")
    except web.HTTPException as e:
        if e.status >= 400:
            response = message(request, e.status, "error")
        else:
            raise _with_headers(e, portal) from None  # redirects keep their headers
    except PyMongoError as e:
        log.warning("database error", extra={"error": type(e).__name__})
        response = message(request, 503, "error")
    return _with_headers(response, portal)


def _with_headers(response: Any, portal: Portal) -> Any:
    h = response.headers
    h["Content-Security-Policy"] = portal.csp
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["X-Frame-Options"] = "DENY"
    h.setdefault("Cache-Control", "no-store")
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    if urlsplit(portal.config.public_url).scheme == "https":
        h["Strict-Transport-Security"] = "max-age=31536000"
    return response


@web.middleware
async def session_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Load the session of the cookie; refuse every POST whose CSRF token does not match it."""
    if request.path.startswith("/static/") or request.path == "/health":
        return await handler(request)
    portal = request.app[PORTAL]
    session, expired = await portal.sessions.get(request.cookies.get(SESSION_COOKIE))
    request[SESSION] = session
    request[EXPIRED] = expired
    if request.method == "POST":
        sent = request.headers.get("X-CSRF-Token", "")
        if not sent and request.content_type == "application/x-www-form-urlencoded":
            sent = str((await request.post()).get("csrf", ""))
        if session is None and expired:
            return message(request, 401, "expired", login=True)
        if session is None or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            log.info("csrf refused", extra={"path": request.path})
            return message(request, 403, "csrf")
    return await handler(request)


# --- pages ---------------------------------------------------------------------------------------


def _live(request: web.Request) -> Session:
    """The session of a POST (the middleware refused the POST if there was none)."""
    session = request[SESSION]
    assert session is not None
    return session


async def anonymous_session(request: web.Request) -> Session:
    session = request.get(SESSION)
    if session is None:
        session = await request.app[PORTAL].sessions.create()
        request[SESSION] = session
    return session


async def index(request: web.Request) -> web.StreamResponse:
    session = request.get(SESSION)
    if session is not None and session.logged_in:
        return render(request, "home.html")
    if request[EXPIRED]:
        response = message(request, 401, "expired", login=True)
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
    return render(request, "index.html")


async def login(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = await anonymous_session(request)
    try:
        start = await portal.oidc.start()
    except ProviderUnavailable as e:
        log.warning(
            "identity provider unavailable", extra={"reason": str(e), "breaker": portal.oidc.breaker.state}
        )
        response = message(request, 503, "provider_down", fallback=True, login=True)
    except LoginError as e:
        log.warning("login refused", extra={"reason": str(e)})
        response = message(request, 502, "login_failed", text="login_failed")
    else:
        await portal.sessions.update(
            session, oidc={"state": start.state, "nonce": start.nonce, "verifier": start.verifier}
        )
        response = redirect(start.url)
    set_session_cookie(response, portal, session)
    return response


async def callback(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = request.get(SESSION)
    if session is None:
        return message(request, 401, "expired", login=True)
    pending = await portal.sessions.take(session, "oidc")
    state, code = request.query.get("state", ""), request.query.get("code", "")
    iss = request.query.get("iss", portal.config.issuer)  # RFC 9207: which provider answered
    if (
        not pending
        or not hmac.compare_digest(state.encode(), str(pending["state"]).encode())
        or not code
        or iss != portal.config.issuer
    ):
        log.info(
            "login refused",
            extra={"reason": "state mismatch or no code", "error": request.query.get("error", "")[:40]},
        )
        return message(request, 400, "login_failed", login=True)
    try:
        pro = await portal.oidc.finish(code, pending["nonce"], pending["verifier"])
    except ProviderUnavailable:
        return message(request, 503, "provider_down", fallback=True, login=True)
    except LoginError as e:
        log.warning("login refused", extra={"reason": str(e)})
        return message(request, 400, "login_failed", login=True)
    allowed = sorted(pro.professions & portal.config.professions)
    if not allowed:
        log.info("profession not allowed", extra={"professions": sorted(pro.professions)})
        await portal.sessions.delete(session)
        response = message(request, 403, "refused")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response
    await portal.sessions.delete(session)  # a new session at login: no fixation
    new = await portal.sessions.create(
        pro=audit.pro_hash(portal.config.audit_key, pro.identifier), name=pro.name or "",
        profession=allowed[0], fallback=False, id_token=pro.id_token,
    )  # fmt: skip
    log.info("login", extra={"profession": allowed[0], "fallback": False})
    response = redirect("/")
    set_session_cookie(response, portal, new)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = _live(request)
    await portal.sessions.delete(session)
    url = None
    if session.doc.get("id_token"):
        url = await portal.oidc.logout_url(
            session.doc["id_token"], portal.config.post_logout_uri, secrets.token_urlsafe(16)
        )
    response = redirect(url or "/logged-out")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def logged_out(request: web.Request) -> web.StreamResponse:
    return message(request, 200, "logged_out", login=True)


def _now(portal: Portal) -> dt.datetime:
    return dt.datetime.fromtimestamp(portal.clock.now(), dt.UTC)


async def issue_code(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = _live(request)
    if not session.logged_in:
        return message(request, 401, "expired", login=True)
    pro, now = session.doc["pro"], _now(portal)
    s = portal.settings
    over = await audit.claim(portal.db, pro, now, s.portal_codes_per_hour, s.portal_codes_per_day)
    if over is not None:
        return message(request, 429, "limit", text=f"limit_{over}")
    try:
        issued = await portal.issuer.issue_short()
    except IssuerUnavailable as e:
        await audit.release(portal.db, pro, now)
        log.warning("code issuer unavailable", extra={"status": str(e)})
        return message(request, 503, "issuer_down", retry_codes=True)
    try:
        await audit.record(
            portal.db, portal.config.audit_key, pro, issued.code, now,
            fallback=bool(session.doc.get("fallback")), profession=session.doc.get("profession", ""),
        )  # fmt: skip
    except PyMongoError:
        await portal.issuer.revoke(issued.code)  # an unaudited code must not be used
        raise
    log.info("code issued", extra={"fallback": bool(session.doc.get("fallback"))})
    until = dt.datetime.fromtimestamp(issued.valid_until, portal.tz)
    qr = segno.make(issued.qr_payload, error="m")
    return render(
        request, "code.html", code=issued.code, valid_until=f"{until:%H:%M}",
        qr_svg=qr.svg_inline(scale=4, omitsize=True, title=None),
    )  # fmt: skip


async def set_lang(request: web.Request) -> web.StreamResponse:
    lang = request.match_info["lang"]
    if lang not in LANGUAGES:
        raise web.HTTPNotFound()
    response = redirect("/")
    response.set_cookie(
        LANG_COOKIE, lang, path="/", secure=True, httponly=True, samesite="Lax", max_age=31536000
    )
    return response


async def fallback_page(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = await anonymous_session(request)
    response = render(request, "fallback.html")
    set_session_cookie(response, portal, session)
    return response


# --- passkeys (JSON, called by static/portal.js) ----------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > 16384:
        raise web.HTTPRequestEntityTooLarge(max_size=16384, actual_size=request.content_length)
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None


async def passkey_register_options(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = _live(request)
    if not session.logged_in or session.doc.get("fallback"):
        return _json({"error": "a provider login is needed to register a passkey"}, 403)
    options, challenge = passkeys.registration_options(
        portal.config.rp_id, session.doc["pro"], session.doc["name"]
    )
    await portal.sessions.update(session, challenge=challenge)
    return _json(options)


async def passkey_register_verify(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = _live(request)
    if not session.logged_in or session.doc.get("fallback"):
        return _json({"error": "a provider login is needed to register a passkey"}, 403)
    challenge = await portal.sessions.take(session, "challenge")
    credential = await _body(request)
    if challenge is None or not isinstance(credential, dict):
        return _json({"error": "no registration under way"}, 400)
    try:
        await passkeys.register(
            portal.db, portal.config.rp_id, portal.config.public_url, challenge, credential,
            session.doc["pro"], session.doc["profession"], session.doc["name"], _now(portal),
        )  # fmt: skip
    except passkeys.PasskeyError as e:
        log.info("passkey registration refused", extra={"reason": str(e)})
        return _json({"error": "registration refused"}, 400)
    log.info("passkey registered")
    return _json({"ok": True})


async def passkey_login_options(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = _live(request)
    options, challenge = passkeys.authentication_options(portal.config.rp_id)
    await portal.sessions.update(session, challenge=challenge)
    return _json(options)


async def passkey_login_verify(request: web.Request) -> web.StreamResponse:
    portal = request.app[PORTAL]
    session = _live(request)
    challenge = await portal.sessions.take(session, "challenge")
    credential = await _body(request)
    if challenge is None or not isinstance(credential, dict):
        return _json({"error": "no login under way"}, 400)
    try:
        who = await passkeys.authenticate(
            portal.db, portal.config.rp_id, portal.config.public_url, challenge, credential, _now(portal)
        )
    except passkeys.PasskeyError as e:
        log.info("passkey login refused", extra={"reason": str(e)})
        return _json({"error": "login refused"}, 401)
    if who.profession not in portal.config.professions:
        return _json({"error": "profession not allowed"}, 403)
    await portal.sessions.delete(session)
    new = await portal.sessions.create(pro=who.pro, name=who.name, profession=who.profession, fallback=True)
    log.info("login", extra={"profession": who.profession, "fallback": True})
    response = _json({"next": "/"})
    set_session_cookie(response, portal, new)
    return response


async def health(request: web.Request) -> web.StreamResponse:
    return _json({"status": "ok", "provider": request.app[PORTAL].oidc.breaker.state})


# --- the application -----------------------------------------------------------------------------


async def _purge_forever(sessions: SessionStore, interval: float = PURGE_INTERVAL) -> None:
    """Delete sessions past their absolute timeout every ``interval`` seconds (a failure waits a turn)."""
    while True:
        try:
            await sessions.purge()
        except PyMongoError as e:
            log.warning("session purge failed", extra={"error": type(e).__name__})
        await asyncio.sleep(interval)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    db: AsyncDatabase | None = None,
    config: PortalConfig | None = None,
) -> web.Application:
    """The portal; ``db`` and ``config`` default to those of the settings (tests inject theirs)."""
    clock = clock or Clock(settings.clock_shift_file)
    config = config or load_config(settings)
    app = web.Application(middlewares=[security_middleware, session_middleware], client_max_size=64 * 1024)

    async def services(app: web.Application) -> AsyncIterator[None]:
        client = None
        database = db
        if database is None:
            client = mongo_client(require_uri(settings, "robert portal"))
            database = client[settings.mongodb_database]
        http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        breaker = CircuitBreaker(
            clock, settings.portal_oidc_breaker_failures, settings.portal_oidc_breaker_open_seconds
        )
        oidc = OidcClient(
            http, clock, breaker, issuer=config.issuer, client_id=config.client_id,
            client_secret=config.client_secret, client_key=config.client_key,
            redirect_uri=config.redirect_uri,
            scopes=settings.portal_oidc_scopes, acr_values=settings.portal_oidc_acr_values,
            id_claim=settings.portal_oidc_id_claim, timeout=settings.portal_oidc_timeout,
        )  # fmt: skip
        issuer = IssuerClient(
            settings.codes_address, config.issuer_token, settings.portal_codes_timeout,
            issuer_channel_credentials(settings),
        )  # fmt: skip
        sessions = SessionStore(
            database, clock, settings.portal_session_idle_minutes * 60.0,
            settings.portal_session_absolute_hours * 3600.0,
        )  # fmt: skip
        templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        app[PORTAL] = Portal(
            settings, config, clock, database, sessions, oidc, issuer, templates,
            content_security_policy(config.issuer), zoneinfo.ZoneInfo(settings.codes_timezone),
        )  # fmt: skip
        await audit.ensure_indexes(database)
        purger = asyncio.create_task(_purge_forever(sessions))
        try:
            yield
        finally:
            purger.cancel()
            await issuer.close()
            await http.close()
            if client is not None:
                await client.close()

    app.cleanup_ctx.append(services)
    app.router.add_get("/", index)
    app.router.add_get("/login", login)
    app.router.add_get("/login/fallback", fallback_page)
    app.router.add_get("/auth/callback", callback)
    app.router.add_post("/logout", logout)
    app.router.add_get("/logged-out", logged_out)
    app.router.add_post("/codes", issue_code)
    app.router.add_get("/lang/{lang}", set_lang)
    app.router.add_post("/passkey/register/options", passkey_register_options)
    app.router.add_post("/passkey/register/verify", passkey_register_verify)
    app.router.add_post("/passkey/login/options", passkey_login_options)
    app.router.add_post("/passkey/login/verify", passkey_login_verify)
    app.router.add_get("/health", health)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    return app
