"""Dummy uploads (``"dummy": true`` in a /report body, robert_server/api/dummies.py and report.py).

A dummy must look like a real upload to a network observer (same status, same answer length, an answer
time drawn from the real ones', a request padded like a real one) and leave no trace on the server
except its metric: nothing stored, no code looked at, no KPI, no rate-limit failure.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time

import pytest
from prometheus_client import REGISTRY

from robert_server import contacts, kpis
from robert_server.api import dummies
from robert_server.codes import make_verifier
from robert_server.codes.ratelimit import COLLECTION as CODE_ATTEMPTS
from simulator.phone import Phone
from tests.fixtures.codes import make_code

PEPPER = "test-pepper-0123456789abcdef"
# Generous: this machine's load moves real answer times between runs and within one, and the dummies'
# times come from the real ones of a moment before (measured D over 10 runs: 0.15 to 0.35; critical 0.50).
ALPHA = 0.0001


def dummy_count() -> float:
    return REGISTRY.get_sample_value("robert_api_dummy_reports_total") or 0.0


async def _registered(api_server, http) -> Phone:
    phone = api_server.phone(http)
    assert (await phone.register()).status == 201
    return phone


async def _heard(api_server, http, alice: Phone, hellos: int) -> Phone:
    phone = await _registered(api_server, http)
    for i in range(hellos):
        phone.hear(alice.hello(), rssi=-50 - i % 30)
    return phone


async def test_a_dummy_is_answered_like_a_real_upload_and_leaves_nothing_but_its_metric(
    api_server, http
) -> None:
    alice = await _registered(api_server, http)
    bob = await _heard(api_server, http, alice, 40)
    before = dummy_count()
    dummy = await bob.dummy_report()
    assert dummy.status == 200, dummy.body
    assert dummy_count() == before + 1
    assert dummy.body["success"] is True and "reportValidationToken" not in dummy.body  # never a real token
    assert await contacts.collection(api_server.db).count_documents({}) == 0
    assert api_server.verifier.sources == []  # no code looked at
    assert (await kpis.report(api_server.db)).get("reports") == 0
    api_server.verifier.add("ABC123")
    real = await bob.report("ABC123")
    assert real.status == 200 and "reportValidationToken" in real.body
    assert real.size == dummy.size  # the same bytes on the wire
    assert len(json.dumps(bob.report_body("X" * 6))) == len(json.dumps(bob.dummy_report_body()))
    assert await contacts.collection(api_server.db).count_documents({}) == 1
    assert (await kpis.report(api_server.db)).get("reports") == 1
    assert dummy_count() == before + 1


@pytest.mark.api_settings(codes_pepper=PEPPER, codes_rate_limit_failures=3)
async def test_dummies_count_no_rate_limit_failure(api_server, http) -> None:
    api_server.use_verifier(make_verifier(api_server.db, api_server.settings, api_server.clock))
    alice = await _registered(api_server, http)
    bob = await _heard(api_server, http, alice, 5)
    for _ in range(10):  # more than the 3 failures that lock a source out
        assert (await bob.dummy_report()).status == 200
    assert await api_server.db[CODE_ATTEMPTS].count_documents({}) == 0
    code = await make_code(api_server.db, api_server.settings, api_server.clock, "short")
    assert (await bob.report(code)).status == 200
    assert await contacts.collection(api_server.db).count_documents({}) == 1


async def test_dummy_and_padding_fields_are_checked_and_a_dummy_is_validated_like_a_real_body(
    api_server, http
) -> None:
    phone = api_server.phone(http)
    good = {"token": "ABC123", "contacts": [], "dummy": True, "padding": "000"}
    assert (await phone.call("POST", "/report", good)).status == 200
    for bad in (
        {**good, "dummy": "yes"},
        {**good, "dummy": 1},
        {**good, "padding": 5},
        {**good, "contacts": None},
        {**good, "contacts": [{"ebid": "x", "ecc": "y", "ids": []}]},
        {"contacts": [], "dummy": True},  # a dummy carries a token like a real upload
    ):
        r = await phone.call("POST", "/report", bad)
        assert r.status == 400, bad
        assert set(r.body) == {"message"}
    assert await contacts.collection(api_server.db).count_documents({}) == 0


def test_the_reservoir_samples_real_times_of_the_same_size_class() -> None:
    reservoir = dummies.LatencyReservoir()
    cold = {reservoir.sample(1000) for _ in range(50)}
    assert all(dummies.COLD_START_SECONDS[0] <= t <= dummies.COLD_START_SECONDS[1] for t in cold)
    for _ in range(dummies.MIN_CLASS_SAMPLES - 1):
        reservoir.record(1024, 0.5)
    reservoir.record(64 * 1024, 2.0)
    assert {reservoir.sample(1024) for _ in range(200)} == {0.5, 2.0}  # too few in its class: all
    reservoir.record(600, 0.5)  # 600 and 1024 are one class
    assert {reservoir.sample(1024) for _ in range(200)} == {0.5}
    assert {reservoir.sample(40_000) for _ in range(200)} == {0.5, 2.0}
    for _ in range(dummies.PER_CLASS):
        reservoir.record(1024, 0.25)
    assert {reservoir.sample(1024) for _ in range(200)} == {0.25}  # only the recent ones


def ks_statistic(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = sorted(a), sorted(b)
    return max(abs(bisect.bisect_right(a, x) / len(a) - bisect.bisect_right(b, x) / len(b)) for x in a + b)


def ks_critical(n: int, m: int, alpha: float) -> float:
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def test_ks_statistic() -> None:
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0
    assert ks_statistic([1, 2], [3, 4]) == 1
    rng = random.Random(1)
    same = ks_statistic([rng.random() for _ in range(200)], [rng.random() for _ in range(200)])
    shifted = ks_statistic([rng.random() for _ in range(200)], [rng.random() + 0.5 for _ in range(200)])
    assert same < ks_critical(200, 200, 0.001) < shifted


@pytest.mark.api_settings(codes_pepper=PEPPER)
async def test_real_and_dummy_uploads_are_indistinguishable_in_size_status_and_time(api_server, http) -> None:
    """Phones that heard 5 to 100 HELLOs each send one real upload (a real short code, the real code
    verifier) and one dummy, in a shuffled order: request bodies of a phone are the same length, every
    answer is a 200 of the same length, and the answer times of the two kinds (as the client sees them)
    pass a two-sample KS test at alpha = 0.0001 (generous: dummies' times are drawn from the real ones')."""
    api_server.use_verifier(make_verifier(api_server.db, api_server.settings, api_server.clock))
    rng = random.Random(14)
    alice = await _registered(api_server, http)
    warm_up, pairs = 16, 40
    # 5 to 100 HELLOs: bodies of 2 to 16 KiB, one size class of the reservoir, whose recent times then
    # follow this machine's load closely (other classes would hold times from longer ago)
    phones = [await _heard(api_server, http, alice, rng.randint(5, 100)) for _ in range(warm_up + pairs)]
    codes = [await make_code(api_server.db, api_server.settings, api_server.clock, "short") for _ in phones]
    for phone, code in zip(phones[:warm_up], codes, strict=False):  # the reservoir's first real times
        assert (await phone.report(code)).status == 200
    # each phone's two uploads one after the other, in a random order: both kinds meet the same load
    sends = [(k, kind) for k in range(warm_up, len(phones)) for kind in rng.sample(["real", "dummy"], 2)]
    seen: dict[str, list[tuple[int, int, float]]] = {"real": [], "dummy": []}
    for k, kind in sends:
        phone = phones[k]
        real_body, dummy_body = phone.report_body(codes[k]), phone.dummy_report_body()
        assert len(json.dumps(real_body)) == len(json.dumps(dummy_body))  # what the observer sees going up
        started = time.perf_counter()
        r = await phone.call("POST", "/report", real_body if kind == "real" else dummy_body)
        seen[kind].append((r.status, r.size, time.perf_counter() - started))
    statuses = {kind: {s for s, _, _ in v} for kind, v in seen.items()}
    sizes = {kind: {n for _, n, _ in v} for kind, v in seen.items()}
    assert statuses == {"real": {200}, "dummy": {200}}
    assert len(sizes["real"]) == 1 and sizes["real"] == sizes["dummy"]
    real_times, dummy_times = ([t for _, _, t in seen[k]] for k in ("real", "dummy"))
    d = ks_statistic(real_times, dummy_times)
    print(
        f"answer times (ms) real median {1000 * sorted(real_times)[pairs // 2]:.1f}, dummy median"
        f" {1000 * sorted(dummy_times)[pairs // 2]:.1f}; KS D = {d:.3f}"
        f" (critical {ks_critical(pairs, pairs, ALPHA):.3f} at alpha {ALPHA})"
    )
    assert d < ks_critical(pairs, pairs, ALPHA)
    assert await contacts.collection(api_server.db).count_documents({}) == len(phones)
    assert (await kpis.report(api_server.db)).get("reports") == len(phones)
