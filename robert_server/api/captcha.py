"""``POST /api/v6/captcha`` and ``GET /api/v6/captcha/{id}/image|audio`` (PROTOCOL.md 6)."""

from __future__ import annotations

import orjson
from aiohttp import web

from robert_server.api import validation as v
from robert_server.api.errors import ApiError, bad_request, unavailable
from robert_server.api.services import SERVICES
from robert_server.captcha import KINDS, CaptchaNotFound, CaptchaUnavailable, CaptchaUsed


async def handle_create(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    body = await v.read_json(request, v.SMALL_BODY)
    kind = v.string(body, "type", max_len=16)
    locale = v.string(body, "locale", max_len=64)
    if kind not in KINDS:
        raise bad_request("invalid field type")
    assert locale is not None
    try:
        captcha_id = await svc.captcha.create(kind, locale)
    except CaptchaUnavailable:
        raise unavailable() from None
    # The deployed server answered the id under both names.
    body_out = orjson.dumps({"id": captcha_id, "captchaId": captcha_id})
    return web.Response(status=201, body=body_out, content_type="application/json")


def _media_handler(media_type: str):  # type: ignore[no-untyped-def]
    async def handle(request: web.Request) -> web.Response:
        svc = request.app[SERVICES]
        captcha_id = request.match_info["captcha_id"]
        if len(captcha_id) > 128:
            raise ApiError(404, "unknown captcha")
        try:
            data, content_type = await svc.captcha.media(captcha_id, media_type)
        except CaptchaNotFound:
            raise ApiError(404, "unknown captcha") from None
        except CaptchaUsed:
            raise ApiError(410, "captcha already used") from None
        return web.Response(body=data, content_type=content_type)

    return handle


handle_image = _media_handler("image")
handle_audio = _media_handler("audio")
