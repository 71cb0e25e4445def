"""Builtin captcha challenges: media, hashed answer, expiry, one attempt; and through /register."""

from __future__ import annotations

import aiohttp
import pytest

from robert_common.clock import ManualClock
from robert_server.api.services import SERVICES
from robert_server.captcha import COLLECTION, BuiltinCaptcha, CaptchaNotFound, CaptchaUsed

NOW = 1_717_409_250.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


async def test_image_challenge_is_a_png_with_a_hashed_answer(db, clock) -> None:
    captcha = BuiltinCaptcha(db, clock)
    cid = await captcha.create("IMAGE", "fr", answer="AB12CD")
    data, content_type = await captcha.media(cid, "image")
    assert data.startswith(b"\x89PNG") and content_type == "image/png"
    doc = await db[COLLECTION].find_one({"_id": cid})
    assert b"AB12CD" not in doc["answer_hash"] and "AB12CD" not in str(doc)
    with pytest.raises(CaptchaNotFound):
        await captcha.media(cid, "audio")  # an image challenge has no audio


async def test_one_attempt_per_challenge(db, clock) -> None:
    captcha = BuiltinCaptcha(db, clock)
    cid = await captcha.create("IMAGE", "fr", answer="AB12CD")
    assert not await captcha.verify(cid, "WRONG1")
    assert not await captcha.verify(cid, "AB12CD")  # spent by the wrong attempt
    with pytest.raises(CaptchaUsed):
        await captcha.media(cid, "image")
    other = await captcha.create("IMAGE", "fr", answer="XY34ZW")
    assert await captcha.verify(other, " xy34zw ")  # case and spaces do not matter
    assert not await captcha.verify(other, "XY34ZW")
    assert not await captcha.verify("no-such-id", "XY34ZW")


async def test_challenges_expire(db, clock) -> None:
    captcha = BuiltinCaptcha(db, clock, ttl=300)
    cid = await captcha.create("IMAGE", "fr", answer="AB12CD")
    clock.advance(301)
    with pytest.raises(CaptchaNotFound):
        await captcha.media(cid, "image")
    assert not await captcha.verify(cid, "AB12CD")
    assert await captcha.purge_expired() == 1


async def test_audio_challenge_is_a_wav(db, clock) -> None:
    captcha = BuiltinCaptcha(db, clock)
    cid = await captcha.create("AUDIO", "fr", answer="123456")
    data, content_type = await captcha.media(cid, "audio")
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE" and content_type == "audio/wav"


@pytest.mark.api_settings(captcha="builtin")
async def test_register_through_the_builtin_captcha(api_server) -> None:
    async with aiohttp.ClientSession() as http:
        phone = api_server.phone(http)
        r = await phone.call("POST", "/captcha", {"type": "IMAGE", "locale": "fr"})
        assert r.status == 201 and r.body["id"] == r.body["captchaId"]
        async with http.get(f"{api_server.base_url}/api/v6/captcha/{r.body['id']}/image") as img:
            assert img.status == 200 and img.content_type == "image/png"
        assert (await phone.register(captcha="WRONG1", captcha_id=r.body["id"])).status == 401
        async with http.get(f"{api_server.base_url}/api/v6/captcha/{r.body['id']}/image") as img:
            assert img.status == 410
        async with http.get(f"{api_server.base_url}/api/v6/captcha/unknown/image") as img:
            assert img.status == 404
        assert (await phone.call("POST", "/captcha", {"type": "VIDEO", "locale": "fr"})).status == 400

        cid = await api_server.app[SERVICES].captcha.create("IMAGE", "fr", answer="GOOD42")
        assert (await phone.register(captcha="GOOD42", captcha_id=cid)).status == 201
        assert (await phone.register(captcha="GOOD42", captcha_id=cid)).status == 401  # used once
