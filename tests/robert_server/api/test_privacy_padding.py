"""Constant-size answers (robert_server/api/padding.py): a network observer who reads the length of an
answer learns nothing about the phone's risk.

The property test builds /status answers with the server's own code (``status.answer``: real tokens
signed with real keys, real service time) over clock values, exposure dates, token issuers and
lifetimes; the end-to-end tests poll the real API (real crypto service, real database) with a phone at
risk and one not, and compare the bytes on the wire: body and headers.
"""

from __future__ import annotations

import base64
import datetime as dt
import os

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robert_common.clock import EPOCH_DURATION, ManualClock, ServiceTime, unix_to_ntp
from robert_common.settings import load_settings
from robert_server import registrations
from robert_server.api import padding, status
from robert_server.tokens import KINDS, SigningKey, TokenSigner, key_id
from simulator.phone import Phone

START = dt.date(2026, 1, 1)
START_UNIX = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
KEYS = {
    kind: SigningKey(k, key_id(k.public_key()))
    for kind in KINDS
    for k in [ec.generate_private_key(ec.SECP256R1())]
}
SEALED = os.urandom(12 + 60 * 384 + 16)  # the bundle is the same for every phone of an epoch
CONFIG = [{"name": "app.minStatusFrequency", "value": 2}]


def _signer(issuer: str, lifetime: int) -> TokenSigner:
    s = load_settings(
        jwt_issuer=issuer, declaration_token_lifetime=lifetime, analytics_token_lifetime=lifetime
    )
    return TokenSigner(KEYS, s)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    now=st.floats(START_UNIX + 86400, 4.2e9),  # 2026 to 2103
    contact_back=st.integers(0, 14 * 86400),
    scoring_back=st.integers(0, 86400),
    issuer=st.text(st.characters(codec="utf-8"), min_size=1, max_size=80),
    lifetime=st.integers(60, 10**9),
    with_scoring=st.booleans(),
    with_contact=st.booleans(),
)
def test_status_answers_have_one_length_whatever_the_risk(
    now: float,
    contact_back: int,
    scoring_back: int,
    issuer: str,
    lifetime: int,
    with_scoring: bool,
    with_contact: bool,
) -> None:
    tokens = _signer(issuer, lifetime)
    time = ServiceTime(START, ManualClock(now))
    epoch = time.current_epoch()
    ntp = unix_to_ntp(now)
    reg_at_risk = {
        "at_risk": True,
        "last_contact_ntp": ntp - contact_back if with_contact else None,
        "last_risk_scoring_ntp": ntp - scoring_back if with_scoring else None,
        "latest_risk_epoch": epoch - 3,
    }
    shape = padding.status_shape(tokens)
    lengths = set()
    for reg, at_risk in ((reg_at_risk, True), ({}, False)):
        answer = status.answer(time, tokens, CONFIG, reg, b"\x01" * 5, SEALED, at_risk, epoch)
        body = shape.dumps(answer)
        parsed = orjson.loads(body)
        assert set(parsed["padding"]) <= {"0"}
        assert {k: v for k, v in parsed.items() if k != "padding"} == answer  # nothing else changed
        lengths.add(len(body))
    assert len(lengths) == 1, lengths


def test_a_value_wider_than_its_bound_is_sent_unpadded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    shape = padding.Shape.of({"lastContactDate": "9999"})
    assert orjson.loads(shape.dumps({"riskLevel": 0, "lastContactDate": "99999"}))["padding"] == ""
    assert "wider than its padding budget" in caplog.text


# --- end to end: the real API --------------------------------------------------------------------


async def _registered(api_server, http) -> Phone:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    return phone


async def _registered_at_risk(api_server, http, **fields) -> Phone:
    """A phone registered first (so its registration is the only one) and then put at risk."""
    assert await registrations.collection(api_server.db).count_documents({}) == 0
    phone = await _registered(api_server, http)
    fields.setdefault("latest_risk_epoch", phone.epoch_now() - 4)
    await registrations.collection(api_server.db).update_one(
        {}, {"$set": {"at_risk": True, "notified": False, **fields}}
    )
    return phone


async def _wire(phone: Phone, path: str, body: dict) -> tuple[int, bytes, int]:
    """Status, body bytes and header bytes of one answer, as they went over the connection."""
    assert phone.http is not None
    async with phone.http.post(phone.base_url + "/api/v6" + path, json=body) as r:
        raw = await r.read()
        headers = sum(len(k) + len(v) + 4 for k, v in r.raw_headers)
        assert "Content-Encoding" not in r.headers
        return r.status, raw, headers


@pytest.mark.api_settings(status_min_epoch_gap=0)
@pytest.mark.parametrize(
    "risk",
    [
        {"last_contact_days": 2, "scoring": True},
        {"last_contact_days": 13, "scoring": False},  # lastRiskScoringDate from latest_risk_epoch
        {"last_contact_days": None, "scoring": False},  # no contact date: no declarationToken
    ],
)
async def test_status_answers_of_phones_at_risk_or_not_are_the_same_bytes_long(
    api_server, http, risk
) -> None:
    clock = api_server.clock
    ntp = clock.ntp_now()
    fields = {}
    if risk["last_contact_days"] is not None:
        fields["last_contact_ntp"] = ntp - risk["last_contact_days"] * 86400 - 1234
    if risk["scoring"]:
        fields["last_risk_scoring_ntp"] = ntp - 3600
    exposed = await _registered_at_risk(api_server, http, **fields)
    safe = await _registered(api_server, http)
    # clock values: within the day, across a UTC day boundary, days later (the keys rotate)
    for step in (
        0,
        7 * EPOCH_DURATION + 13,
        86400 - 2 * EPOCH_DURATION,
        3 * EPOCH_DURATION - 1,
        2 * 86400 + 17,
    ):
        clock.advance(step)
        a = await _wire(safe, "/status", safe.status_body())
        b = await _wire(exposed, "/status", exposed.status_body())
        assert a[0] == b[0] == 200, (a, b)
        assert orjson.loads(a[1])["riskLevel"] == 0 and orjson.loads(b[1])["riskLevel"] == 4
        assert "declarationToken" in orjson.loads(b[1]) or risk["last_contact_days"] is None
        assert len(a[1]) == len(b[1]), (step, len(a[1]), len(b[1]))
        assert a[2] == b[2]  # same headers length (Content-Length has the same digits)
        # the phones still read their answers: the padding is one member they ignore
        safe.status_answered(orjson.loads(a[1]))
        exposed.status_answered(orjson.loads(b[1]))


async def test_unregister_and_delete_history_answers_do_not_depend_on_the_risk(api_server, http) -> None:
    from crypto_backend import protocol

    exposed = await _registered_at_risk(api_server, http, last_contact_ntp=api_server.clock.ntp_now() - 86400)
    safe = await _registered(api_server, http)
    for path, salt in (
        ("/deleteExposureHistory", protocol.SALT_DELETE_HISTORY),
        ("/unregister", protocol.SALT_UNREGISTER),
    ):
        a = await _wire(safe, path, safe.auth_body(salt))
        b = await _wire(exposed, path, exposed.auth_body(salt))
        assert a == b and a[0] == 200


async def test_report_answers_have_one_length_over_clock_values(api_server, http) -> None:
    alice = await _registered(api_server, http)
    lengths = set()
    for i, step in enumerate((0, 1, 86400 * 365 * 30, 86400 * 365 * 40)):  # up to 2096
        api_server.clock.advance(step)
        code = f"CODE{i:02d}"
        api_server.verifier.add(code)
        status_code, raw, _ = await _wire(alice, "/report", {"token": code, "contacts": []})
        assert status_code == 200, raw
        assert set(orjson.loads(raw)["padding"]) <= {"0"}
        token = orjson.loads(raw)["reportValidationToken"]
        assert base64.urlsafe_b64decode(token.split(".")[1] + "==")  # a real token in a padded answer
        lengths.add(len(raw))
    assert len(lengths) == 1, lengths
