"""Dummy uploads on the phone side: bodies padded alike, and the rate the runner sends them at."""

from __future__ import annotations

import json

import pytest

from robert_common.clock import ManualClock
from simulator.phone import MIN_REPORT_BODY, Phone, padded_report
from simulator.runner import Backend, ManualTime, Runner, RunOptions
from simulator.scenario import ScenarioError, parse_scenario


@pytest.mark.parametrize("filler", [0, 1, 500, 1000, 5000, 70_000])
def test_a_report_body_is_padded_to_a_power_of_two(filler: int) -> None:
    body = padded_report({"token": "ABC123", "contacts": [], "dummy": False, "x": "y" * filler})
    size = len(json.dumps(body))
    assert size >= MIN_REPORT_BODY and size & (size - 1) == 0
    assert set(body["padding"]) <= {"0"}
    assert size < 2 * max(MIN_REPORT_BODY, filler + 100)


def test_a_report_body_is_never_padded_over_the_server_limit() -> None:
    body = padded_report({"token": "A", "contacts": [], "x": "y" * 3000}, max_size=3500)
    assert len(json.dumps(body)) == 3500


def _phone_that_heard(n: int) -> Phone:
    clock = ManualClock(1_800_000_000)
    alice, bob = Phone(clock=clock), Phone(clock=clock)
    for p in (alice, bob):  # keys and tuples without a server: enough for HELLOs
        p.time_start = clock.ntp_now() - 86400
        p.k_mac = b"k" * 32
        p.tuples = {p.epoch_now(): (b"e" * 8, b"c")}
    for i in range(n):
        bob.hear(alice.hello(), rssi=-40 - i % 50)
    return bob


@pytest.mark.parametrize("heard", [0, 1, 7, 180, 181, 900])
def test_a_dummy_body_mirrors_the_phone_s_real_one_in_size(heard: int) -> None:
    phone = _phone_that_heard(heard)
    real, dummy = phone.report_body("ABC123"), phone.dummy_report_body()
    assert dummy["dummy"] is True and real["dummy"] is False
    assert sum(len(c["ids"]) for c in dummy["contacts"]) == heard
    assert len(json.dumps(real)) == len(json.dumps(dummy))
    assert len(dummy["token"]) == 6


def test_the_dummy_rate_is_read_from_the_scenario() -> None:
    base = {"population": [{"name": "a"}]}
    assert parse_scenario(base).dummies_per_day == 0
    assert parse_scenario({**base, "dummies": {"per_phone_per_day": 1.5}}).dummies_per_day == 1.5
    with pytest.raises(ScenarioError, match="dummies.per_phone_per_day"):
        parse_scenario({**base, "dummies": {"per_phone_per_day": -1}})


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0, 3.0])
def test_the_runner_sends_dummies_at_the_configured_rate(rate: float) -> None:
    sc = parse_scenario(
        {
            "days": 40,
            "polling": {"every_hours": 12},
            "population": [{"group": "p", "count": 25}],
            "dummies": {"per_phone_per_day": rate},
        }
    )
    runner = Runner(sc, RunOptions("", b""), ManualTime(ManualClock(0)), Backend(None, None))  # type: ignore[arg-type]
    names = list(sc.phones)
    rounds = 2 * sc.days
    sent = sum(len(runner._dummies(names)) for _ in range(rounds))
    expected = rate * sc.days * len(names)
    assert abs(sent - expected) <= 0.1 * expected + 1e-9, (sent, expected)
