"""The phone API end to end: a real HTTP server, the real crypto service and database, a phone-side client."""

from __future__ import annotations

import asyncio

import jwt
import pytest

from crypto_backend import protocol
from robert_common.clock import EPOCH_DURATION
from robert_server import client_config, kpis, registrations
from robert_server.api.services import SERVICES
from simulator.phone import Phone


async def registered(api_server, http, **kw) -> Phone:
    phone = api_server.phone(http)
    r = await phone.register(**kw)
    assert r.status == 201, r.body
    return phone


def decode_jwt(api_server, kind: str, token: str) -> dict:
    services = api_server.app[SERVICES]
    public = services.tokens.public_key_pem(kind)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == services.tokens.keys[kind].kid
    claims = jwt.decode(
        token,
        public,
        algorithms=["ES256"],
        issuer=api_server.settings.jwt_issuer,
        options={"verify_exp": False},
    )
    assert claims["iat"] == int(api_server.clock.now()) < claims["exp"]
    return claims


async def test_register_returns_a_bundle_the_phone_opens(api_server, http) -> None:
    await client_config.set_value(api_server.db, "app.minStatusFrequency", 2)
    push = {"token": "push-token", "locale": "fr-FR", "timezone": "Europe/Paris"}
    phone = api_server.phone(http)
    r = await phone.register(push_info=push)
    assert r.status == 201
    assert set(r.body) == {"tuples", "timeStart", "config"}
    assert r.body["config"] == [{"name": "app.minStatusFrequency", "value": 2}]
    epoch = phone.epoch_now()
    epochs = sorted(phone.tuples)
    assert epochs[0] == epoch
    assert len(epochs) == protocol.bundle_epochs(epoch, api_server.settings.bundle_days)
    assert epochs == list(range(epochs[0], epochs[0] + len(epochs)))
    regs = [d async for d in registrations.collection(api_server.db).find({})]
    assert len(regs) == 1
    assert regs[0]["push_info"] == push
    assert regs[0]["created_epoch"] == epoch


async def test_status_then_too_soon_then_accepted_after_the_gap(api_server, http) -> None:
    phone = await registered(api_server, http)
    first = await phone.status()
    assert first.status == 200, first.body
    assert first.body["riskLevel"] == 0
    assert "declarationToken" not in first.body and "lastContactDate" not in first.body
    claims = decode_jwt(api_server, "analytics", first.body["analyticsToken"])
    assert claims["exp"] > claims["iat"]

    too_soon = await phone.status()
    assert too_soon.status == 400
    reg = await _only_registration(api_server)
    assert reg["last_refused_status_epoch"] == phone.epoch_now()

    api_server.clock.advance(2 * EPOCH_DURATION)
    again = await phone.status()
    assert again.status == 200
    assert min(phone.tuples) <= phone.epoch_now() <= max(phone.tuples)


@pytest.mark.api_settings(status_min_epoch_gap=0)
async def test_a_gap_of_zero_disables_the_limit(api_server, http) -> None:
    phone = await registered(api_server, http)
    assert (await phone.status()).status == 200
    assert (await phone.status()).status == 200


async def test_two_concurrent_polls_cannot_both_pass(api_server, http) -> None:
    phone = await registered(api_server, http)
    assert (await phone.status()).status == 200
    api_server.clock.advance(2 * EPOCH_DURATION)
    results = await asyncio.gather(*(phone.status() for _ in range(4)))
    assert sorted(r.status for r in results) == [200, 400, 400, 400]


async def test_at_risk_status_gives_dates_and_tokens_and_counts_one_notification(api_server, http) -> None:
    phone = await registered(api_server, http)
    reg = await _only_registration(api_server)
    last_contact = api_server.clock.ntp_now() - 2 * 86400
    scoring = api_server.clock.ntp_now() - 3600
    await registrations.collection(api_server.db).update_one(
        {"_id": reg["_id"]},
        {
            "$set": {
                "at_risk": True,
                "notified": False,
                "last_contact_ntp": last_contact,
                "last_risk_scoring_ntp": scoring,
                "latest_risk_epoch": phone.epoch_now() - 4,
            }
        },
    )
    r = await phone.status()
    assert r.status == 200
    assert r.body["riskLevel"] == 4
    assert r.body["lastContactDate"] == str(last_contact)
    assert r.body["lastRiskScoringDate"] == str(scoring)
    claims = decode_jwt(api_server, "declaration", r.body["declarationToken"])
    assert claims["lastContactDateTimestamp"] == last_contact
    assert (await registrations.get(api_server.db, reg["_id"]))["notified"] is True
    api_server.clock.advance(2 * EPOCH_DURATION)
    assert (await phone.status()).status == 200
    assert (await kpis.report(api_server.db)).get("notifiedUsers") == 1


async def test_push_info_is_stored_by_status(api_server, http) -> None:
    phone = await registered(api_server, http)
    push = {"token": "t2", "locale": "en-GB", "timezone": "Europe/London"}
    assert (await phone.status(push_info=push)).status == 200
    assert (await _only_registration(api_server))["push_info"] == push


async def test_time_drift_is_refused_and_recorded(api_server, http) -> None:
    phone = await registered(api_server, http)
    tolerance = api_server.settings.request_time_tolerance
    r = await phone.status(ntp_time=api_server.clock.ntp_now() + tolerance + 30)
    assert r.status == 400
    reg = await _only_registration(api_server)
    assert reg["last_drift"] == tolerance + 30
    assert reg["last_status_epoch"] is None  # not accepted
    assert (await phone.status(ntp_time=api_server.clock.ntp_now() - tolerance)).status == 200


async def test_unregister_forgets_the_phone(api_server, http) -> None:
    phone = await registered(api_server, http, push_info={"token": "t", "locale": "fr", "timezone": "UTC"})
    r = await phone.unregister()
    assert r.status == 200 and r.body == {"success": True}
    assert await registrations.collection(api_server.db).find_one({}) is None
    api_server.clock.advance(2 * EPOCH_DURATION)
    assert (await phone.status()).status == 430  # the crypto service no longer knows the identity
    assert (await phone.unregister()).status == 430


async def test_delete_exposure_history_empties_exposures(api_server, http) -> None:
    phone = await registered(api_server, http)
    reg = await _only_registration(api_server)
    await registrations.collection(api_server.db).update_one(
        {"_id": reg["_id"]}, {"$set": {"exposures": {"100": 0.5, "101": 1.5}}}
    )
    r = await phone.delete_history()
    assert r.status == 200 and r.body == {"success": True}
    assert (await _only_registration(api_server))["exposures"] == {}


async def test_registration_gone_answers_404(api_server, http) -> None:
    phone = await registered(api_server, http)
    await registrations.collection(api_server.db).delete_many({})
    assert (await phone.status()).status == 404
    assert (await phone.delete_history()).status == 404
    assert (await phone.unregister()).status == 404


async def test_clock(api_server, http) -> None:
    phone = api_server.phone(http)
    r = await phone.clock_info()
    assert r.status == 200
    start = api_server.settings.time_start_date
    assert r.body["serviceStartDate"] == start.isoformat()
    assert r.body["time"].endswith("Z") and len(r.body["time"]) == len("2026-01-01T00:00:00.000Z")
    from robert_common.clock import ServiceTime

    assert r.body["epoch"] == ServiceTime(start, api_server.clock).current_epoch()


async def test_report_stores_contacts_once_and_consumes_the_code(api_server, http) -> None:
    from robert_server import contacts

    alice = await registered(api_server, http)
    bob = await registered(api_server, http)
    for i in range(3):
        bob.hear(alice.hello(), rssi=-60 - i)
        api_server.clock.advance(60)
    api_server.verifier.add("ABC123")
    r = await bob.report("ABC123")
    assert r.status == 200, r.body
    assert r.body["success"] is True and r.body["message"]
    decode_jwt(api_server, "report", r.body["reportValidationToken"])
    docs = [d async for d in contacts.collection(api_server.db).find({})]
    assert len(docs) == 1
    stored = contacts.unpack_contact(docs[0]["contacts"][0])
    assert stored.ebid == bob.heard[0].ebid and [h.rssi for h in stored.hellos] == [-60, -61, -62]
    assert api_server.verifier.used == {"ABC123"}
    assert api_server.verifier.sources == ["127.0.0.1"]
    assert (await kpis.report(api_server.db)).get("reports") == 1
    again = await bob.report("ABC123")
    assert again.status == 401


async def test_report_with_no_contacts_is_accepted(api_server, http) -> None:
    api_server.verifier.add("XYZ789")
    phone = api_server.phone(http)
    r = await phone.call("POST", "/report", {"token": "XYZ789", "contacts": []})
    assert r.status == 200


async def test_every_route_is_in_the_openapi_document(api_server, http) -> None:
    import yaml

    from robert_server.api.app import OPENAPI_PATH, PREFIX

    doc = yaml.safe_load(OPENAPI_PATH.read_text())
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    for route in api_server.app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical.removeprefix(PREFIX).replace("{captcha_id}", "{captchaId}")
        assert (path, route.method) in documented, f"{route.method} {path} missing from openapi.yaml"
    async with http.get(api_server.base_url + "/api/v6/openapi.yaml") as r:
        assert r.status == 200
        assert yaml.safe_load(await r.read())["paths"].keys() == doc["paths"].keys()


async def _only_registration(api_server) -> dict:
    docs = [d async for d in registrations.collection(api_server.db).find({})]
    assert len(docs) == 1
    return docs[0]


@pytest.mark.api_settings(codes_pepper="test-pepper-0123456789abcdef")
async def test_report_with_a_real_short_code(api_server, http) -> None:
    from robert_server import contacts
    from robert_server.codes import make_verifier
    from tests.fixtures.codes import make_code

    api_server.use_verifier(make_verifier(api_server.db, api_server.settings, api_server.clock))
    code = await make_code(api_server.db, api_server.settings, api_server.clock, "short")
    alice = await registered(api_server, http)
    bob = await registered(api_server, http)
    bob.hear(alice.hello(), rssi=-55)
    assert (await bob.report("ZZZZZZ")).status == 401
    r = await bob.report(code)
    assert r.status == 200, r.body
    assert await contacts.collection(api_server.db).count_documents({}) == 1
    assert (await bob.report(code)).status == 401  # single use
