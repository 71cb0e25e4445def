"""Every bad input of the phone API: right status, a short JSON message, no stack trace, nothing written."""

from __future__ import annotations

import base64
import logging
import os

import pytest

from crypto_backend import protocol
from robert_common.clock import EPOCH_DURATION, EPOCHS_PER_DAY
from robert_server import contacts, registrations
from simulator.phone import Phone, b64


@pytest.fixture
async def phone(api_server, http) -> Phone:
    p = api_server.phone(http)
    assert (await p.register()).status == 201
    return p


async def post_raw(api_server, http, path: str, data: bytes, content_type: str = "application/json"):
    async with http.post(
        f"{api_server.base_url}/api/v6{path}", data=data, headers={"Content-Type": content_type}
    ) as r:
        return r.status, await r.read()


def assert_short_json_error(raw: bytes) -> None:
    import json

    body = json.loads(raw)
    assert set(body) == {"message"} and len(body["message"]) < 80
    assert "Traceback" not in body["message"]


def with_field(body: dict, name: str, value) -> dict:
    out = dict(body)
    if value is _DROP:
        out.pop(name)
    else:
        out[name] = value
    return out


_DROP = object()

BAD_AUTH_FIELDS = [
    ("ebid", _DROP),
    ("ebid", None),
    ("ebid", 12345),
    ("ebid", "not base64!!"),
    ("ebid", b64(b"1234567")),  # 7 bytes
    ("ebid", b64(b"123456789")),  # 9 bytes
    ("epochId", _DROP),
    ("epochId", "100"),
    ("epochId", 1.5),
    ("epochId", True),
    ("epochId", -1),
    ("epochId", 2**24),
    ("time", b64(b"\x00\x01\x02")),
    ("time", "AAAA"),  # 3 bytes
    ("time", []),
    ("mac", b64(bytes(31))),
    ("mac", b64(bytes(33))),
    ("mac", "=" * 44),
]


@pytest.mark.parametrize(("name", "value"), BAD_AUTH_FIELDS, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("path", ["/status", "/unregister", "/deleteExposureHistory"])
async def test_bad_auth_fields_are_400(api_server, http, phone, path, name, value) -> None:
    salt = {"/status": 2, "/unregister": 3, "/deleteExposureHistory": 4}[path]
    body = with_field(phone.auth_body(salt), name, value)
    r = await phone.call("POST", path, body)
    assert r.status == 400
    assert set(r.body) == {"message"}
    reg = (await registrations.collection(api_server.db).find({}).to_list())[0]
    assert reg["last_status_epoch"] is None and "last_drift" not in reg


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[1, 2]", 400),
        (b'"text"', 400),
        (b"null", 400),
        (b"\xff\xfe", 400),
    ],
)
@pytest.mark.parametrize("path", ["/status", "/register", "/report", "/unregister", "/captcha"])
async def test_malformed_json(api_server, http, path, data, status) -> None:
    code, raw = await post_raw(api_server, http, path, data)
    assert code == status
    assert_short_json_error(raw)


@pytest.mark.parametrize("path", ["/status", "/register", "/report", "/deleteExposureHistory"])
async def test_wrong_content_type_is_415(api_server, http, path) -> None:
    code, raw = await post_raw(api_server, http, path, b"{}", "text/plain")
    assert code == 415
    assert_short_json_error(raw)


@pytest.mark.parametrize(("path", "size"), [("/status", 9 * 1024), ("/register", 17 * 1024)])
async def test_oversize_body_is_413(api_server, http, path, size) -> None:
    data = b'{"pad": "' + b"x" * size + b'"}'
    code, raw = await post_raw(api_server, http, path, data)
    assert code == 413
    assert_short_json_error(raw)


async def _chunked(data: bytes):
    for k in range(0, len(data), 1024):
        yield data[k : k + 1024]


@pytest.mark.parametrize(("size", "status"), [(9 * 1024, 413), (10, 400)])
async def test_chunked_body_is_measured_as_it_arrives(api_server, http, size, status) -> None:
    # No Content-Length: the body limit is enforced while reading (400: a small body, no fields).
    data = b'{"pad": "' + b"x" * size + b'"}'
    async with http.post(
        f"{api_server.base_url}/api/v6/status",
        data=_chunked(data),
        headers={"Content-Type": "application/json"},
    ) as r:
        assert r.status == status
        assert_short_json_error(await r.read())


@pytest.mark.api_settings(report_max_body_bytes=4096)
async def test_oversize_report_is_413_and_keeps_the_code(api_server, http) -> None:
    api_server.verifier.add("CODE01")
    hello = {
        "timeCollectedOnDevice": 1,
        "timeFromHelloMessage": 1,
        "mac": b64(bytes(5)),
        "rssiCalibrated": -50,
    }
    contact = {"ebid": b64(bytes(8)), "ecc": b64(b"\x01"), "ids": [hello] * 100}
    phone = api_server.phone(http)
    r = await phone.call("POST", "/report", {"token": "CODE01", "contacts": [contact]})
    assert r.status == 413
    assert "CODE01" in api_server.verifier.available


async def test_forged_mac_is_400(api_server, phone) -> None:
    body = phone.auth_body(2)
    body["mac"] = b64(os.urandom(32))
    assert (await phone.call("POST", "/status", body)).status == 400


async def test_mac_of_another_request_type_is_400(api_server, phone) -> None:
    body = phone.auth_body(protocol.SALT_UNREGISTER)  # an /unregister MAC sent to /status
    assert (await phone.call("POST", "/status", body)).status == 400
    body = phone.auth_body(protocol.SALT_STATUS)
    assert (await phone.call("POST", "/unregister", body)).status == 400
    assert await registrations.collection(api_server.db).count_documents({}) == 1


async def test_replayed_request_is_refused(api_server, phone) -> None:
    body = phone.auth_body(protocol.SALT_STATUS)
    assert (await phone.call("POST", "/status", body)).status == 200
    assert (await phone.call("POST", "/status", body)).status == 400  # too soon
    api_server.clock.advance(2 * EPOCH_DURATION)
    assert (await phone.call("POST", "/status", body)).status == 400  # its time is now too old
    reg = (await registrations.collection(api_server.db).find({}).to_list())[0]
    assert reg["last_drift"] == -2 * EPOCH_DURATION


async def test_ebid_of_another_epoch_is_400(api_server, phone) -> None:
    epoch = phone.epoch_now()
    body = phone.auth_body(protocol.SALT_STATUS, epoch_id=epoch + 1)
    body["epochId"] = epoch  # EBID of epoch+1, claimed for epoch
    assert (await phone.call("POST", "/status", body)).status == 400


async def test_unknown_ebid_is_430(api_server, phone) -> None:
    epoch = phone.epoch_now()
    ebid = api_server.crypto.ebid(os.urandom(5), epoch)  # a well-formed EBID of nobody
    body = phone.auth_body(protocol.SALT_STATUS)
    body["ebid"] = b64(ebid)
    assert (await phone.call("POST", "/status", body)).status == 430
    assert (await phone.call("POST", "/deleteExposureHistory", body)).status == 430


async def test_epoch_without_day_key_is_430(api_server, phone) -> None:
    old_epoch = phone.epoch_now() - 60 * EPOCHS_PER_DAY  # long before the oldest key
    body = phone.auth_body(protocol.SALT_STATUS)
    body["epochId"] = old_epoch
    assert (await phone.call("POST", "/status", body)).status == 430


@pytest.mark.parametrize(
    "change",
    [
        {"clientPublicECDHKey": "not base64"},
        {"clientPublicECDHKey": b64(b"\x30\x59" + bytes(89))},  # right size, not a key
        {"clientPublicECDHKey": b64(bytes(300))},
        {"clientPublicECDHKey": None},
        {"captcha": None},
        {"captchaId": 7},
        {"pushInfo": {"token": "t", "locale": "fr"}},
        {"pushInfo": "token"},
    ],
    ids=str,
)
async def test_bad_register_is_400_and_writes_nothing(api_server, http, change) -> None:
    phone = api_server.phone(http)
    body = {"captcha": "x", "captchaId": "y", "clientPublicECDHKey": b64(phone.public_key_spki), **change}
    r = await phone.call("POST", "/register", body)
    assert r.status == 400
    assert await registrations.collection(api_server.db).count_documents({}) == 0


def _hello(**change) -> dict:
    return {
        "timeCollectedOnDevice": 3_900_000_000,
        "timeFromHelloMessage": 1234,
        "mac": b64(bytes(5)),
        "rssiCalibrated": -50,
        **change,
    }


def _contact(**change) -> dict:
    return {"ebid": b64(bytes(8)), "ecc": b64(b"\x01"), "ids": [_hello()], **change}


@pytest.mark.parametrize(
    "body",
    [
        {"token": "GOOD01"},  # contacts missing
        {"token": "GOOD01", "contacts": None},
        {"token": "GOOD01", "contacts": {}},
        {"contacts": []},  # token missing
        {"token": 12, "contacts": []},
        {"token": "GOOD01", "contacts": [_contact(ebid=b64(bytes(7)))]},
        {"token": "GOOD01", "contacts": [_contact(ecc=b64(b"\x01\x02"))]},
        {"token": "GOOD01", "contacts": [_contact(ids=[])]},
        {"token": "GOOD01", "contacts": [_contact(ids=None)]},
        {"token": "GOOD01", "contacts": [_contact(), "x"]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(timeCollectedOnDevice=2**32)])]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(timeCollectedOnDevice=-1)])]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(timeFromHelloMessage=65536)])]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(mac=b64(bytes(6)))])]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(mac="!!!!!!!!")])]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(rssiCalibrated=5)])]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(rssiCalibrated="x")])]},
        {"token": "GOOD01", "contacts": [_contact(ids=[_hello(rssiCalibrated=None)])]},
    ],
    ids=lambda b: str(b)[:60],
)
async def test_bad_report_is_400_stores_nothing_and_keeps_the_code(api_server, http, body) -> None:
    api_server.verifier.add("GOOD01")
    r = await api_server.phone(http).call("POST", "/report", body)
    assert r.status == 400
    assert await contacts.collection(api_server.db).count_documents({}) == 0
    assert "GOOD01" in api_server.verifier.available


async def test_bad_code_is_401(api_server, http) -> None:
    r = await api_server.phone(http).call("POST", "/report", {"token": "WRONG1", "contacts": [_contact()]})
    assert r.status == 401
    assert await contacts.collection(api_server.db).count_documents({}) == 0


async def test_unknown_routes_and_methods_answer_json(api_server, http) -> None:
    async with http.get(api_server.base_url + "/api/v6/nothing") as r:
        assert r.status == 404
        assert_short_json_error(await r.read())
    async with http.get(api_server.base_url + "/api/v6/status") as r:
        assert r.status == 405
        assert_short_json_error(await r.read())


async def test_no_secret_reaches_the_logs(api_server, http, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="robert")
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    body = phone.auth_body(protocol.SALT_STATUS)
    assert (await phone.call("POST", "/status", body)).status == 200
    forged = dict(body, mac=b64(os.urandom(32)))
    assert (await phone.call("POST", "/status", forged)).status == 400
    api_server.verifier.add("SECRET1")
    assert (await phone.call("POST", "/report", {"token": "SECRET1", "contacts": []})).status == 200
    reg = (await registrations.collection(api_server.db).find({}).to_list())[0]
    secrets = [body["ebid"], body["mac"], forged["mac"], "SECRET1", base64.b64encode(reg["_id"]).decode()]
    secrets.append(reg["_id"].hex())
    ours = [r for r in caplog.records if r.name.startswith("robert")]
    assert ours, "the API logs nothing?"
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    for s in secrets:
        assert s not in text
