"""External captcha mode against a real HTTP captcha server started here (issue 10 item 6).

The upstream answers ``SUCCESS`` on *every* path it does not know (as a host with other services may):
an id that could steer the API's upstream call (``../``, ``?``, ``#``, encoded slashes) must never
reach it, and a well-formed id is checked at the one fixed path.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from robert_common.settings import load_settings
from robert_server.api.services import SERVICES
from robert_server.captcha import CaptchaNotFound, CaptchaUnavailable, ExternalCaptcha, make_captcha

HOSTILE_IDS = [
    "../../admin/anything",
    "../admin",
    "x?answer=1",
    "x#y",
    "%2e%2e%2fadmin",
    "..%2F..%2Fadmin",
    "0123456789abcdef0123456789abcdef/../../admin",
    "0123456789abcdef0123456789abcdef?x",
    "0123456789abcdef0123456789abcde",  # 31 digits
    "0123456789abcdef0123456789abcdeg",
    "",
]


@dataclass
class Upstream:
    url: str
    answers: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    strays: list[str] = field(default_factory=list)  # paths hit that are not the captcha API
    bad_create: bool = False


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream("")

    async def create(request: web.Request) -> web.Response:
        if state.bad_create:
            return web.json_response({"id": "../../admin"})
        cid = secrets.token_hex(16)
        state.answers[cid] = "GOOD42"
        return web.json_response({"id": cid})

    async def media(request: web.Request) -> web.Response:
        cid, _, ext = request.match_info["name"].partition(".")
        if cid in state.used:
            return web.Response(status=410)
        if cid not in state.answers or ext not in ("png", "wav"):
            return web.Response(status=404)
        return web.Response(body=b"\x89PNG fake", content_type="image/png")

    async def check(request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in state.answers or cid in state.used:
            return web.Response(status=404)
        state.used.add(cid)
        ok = (await request.json()).get("answer") == state.answers[cid]
        return web.json_response({"result": "SUCCESS" if ok else "FAILED"})

    async def stray(request: web.Request) -> web.Response:
        state.strays.append(str(request.rel_url))
        return web.json_response({"result": "SUCCESS"})

    app = web.Application()
    app.router.add_post("/base/captcha", create)
    app.router.add_get("/base/captcha/{name}", media)
    app.router.add_post("/base/captcha/{cid}/checkAnswer", check)
    app.router.add_route("*", "/{tail:.*}", stray)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/base"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_external_mode_is_built_from_the_settings(upstream: Upstream, tmp_path) -> None:
    settings = load_settings(data_dir=tmp_path, captcha="external", captcha_external_url=upstream.url)
    service = await make_captcha(settings, None, None)  # type: ignore[arg-type]
    try:
        assert isinstance(service, ExternalCaptcha)
        cid = await service.create("IMAGE", "fr")
        assert (await service.media(cid, "image"))[0].startswith(b"\x89PNG")
        assert await service.verify(cid, "GOOD42")
        assert not await service.verify(cid, "GOOD42")  # spent upstream
    finally:
        await service.close()
    with pytest.raises(ValueError):
        ExternalCaptcha(upstream.url + "?x=1")


async def test_hostile_ids_never_reach_the_captcha_host(upstream: Upstream) -> None:
    service = ExternalCaptcha(upstream.url)
    try:
        for cid in HOSTILE_IDS:
            assert not await service.verify(cid, "GOOD42"), cid
            with pytest.raises(CaptchaNotFound):
                await service.media(cid, "image")
        assert upstream.strays == []
        good = await service.create("AUDIO", "fr")
        assert not await service.verify(good, "WRONG1")
        upstream.bad_create = True
        with pytest.raises(CaptchaUnavailable):  # nor is an id of the wrong shape handed to phones
            await service.create("IMAGE", "fr")
    finally:
        await service.close()
    assert upstream.strays == []


async def test_register_through_the_external_captcha(api_server, upstream: Upstream) -> None:
    svc = api_server.app[SERVICES]
    svc.captcha = ExternalCaptcha(upstream.url)
    try:
        async with aiohttp.ClientSession() as http:
            phone = api_server.phone(http)
            for cid in HOSTILE_IDS[:4]:
                assert (await phone.register(captcha="GOOD42", captcha_id=cid)).status == 401, cid
            async with http.get(f"{api_server.base_url}/api/v6/captcha/..%2F..%2Fadmin/image") as r:
                assert r.status == 404
            assert upstream.strays == []
            r = await phone.call("POST", "/captcha", {"type": "IMAGE", "locale": "fr"})
            assert r.status == 201
            cid = r.body["id"]
            async with http.get(f"{api_server.base_url}/api/v6/captcha/{cid}/image") as img:
                assert img.status == 200
            assert (await phone.register(captcha="GOOD42", captcha_id=cid)).status == 201
    finally:
        await svc.captcha.close()
