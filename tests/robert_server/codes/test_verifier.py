"""Reserve, confirm and release codes of each kind against the real database (PROTOCOL.md 7)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock
from robert_common.mongo import mongo_client
from robert_common.settings import Settings, load_settings
from robert_server.codes import make_verifier, ratelimit, store
from robert_server.codes.jwt_codes import sign_jwt_code
from robert_server.codes.service import CodeService
from tests.fixtures.codes import CODES_JWT_KEY, CODES_JWT_KID, codes_settings_overrides, make_code

KINDS = ["short", "long", "jwt"]
SOURCE = "192.0.2.1"


def rejected(kind: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("robert_codes_verifications_total", {"kind": kind, "result": reason})
    return value or 0.0


@pytest.mark.parametrize("kind", KINDS)
async def test_reserve_confirm_then_reuse_fails(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock, kind: str
) -> None:
    code = await make_code(db, codes_settings, codes_clock, kind)
    verifier = make_verifier(db, codes_settings, codes_clock)
    res = await verifier.reserve(code, SOURCE)
    assert res is not None and res.kind == kind
    assert code not in res.report_id and code.lower() not in res.report_id
    assert await verifier.confirm(res)
    used_before = rejected(kind, "used")
    assert await verifier.reserve(code, SOURCE) is None
    assert rejected(kind, "used") == used_before + 1


@pytest.mark.parametrize("kind", KINDS)
async def test_release_gives_the_code_back_with_the_same_report_id(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock, kind: str
) -> None:
    code = await make_code(db, codes_settings, codes_clock, kind)
    verifier = make_verifier(db, codes_settings, codes_clock)
    first = await verifier.reserve(code, SOURCE)
    assert first is not None
    assert await verifier.reserve(code, SOURCE) is None  # held by the first upload
    assert await verifier.release(first)
    assert not await verifier.confirm(first)  # a released reservation cannot be confirmed
    second = await verifier.reserve(code, SOURCE)
    assert second is not None and second.report_id == first.report_id and second.token != first.token
    assert await verifier.confirm(second)


async def test_short_codes_accept_lower_case_and_spaces(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    code = await make_code(db, codes_settings, codes_clock, "short")
    verifier = make_verifier(db, codes_settings, codes_clock)
    res = await verifier.reserve(f" {code.lower()} ", SOURCE)
    assert res is not None and await verifier.confirm(res)


async def test_long_codes_accept_upper_case(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    code = await make_code(db, codes_settings, codes_clock, "long")
    verifier = make_verifier(db, codes_settings, codes_clock)
    assert await verifier.reserve(code.upper(), SOURCE) is not None


async def test_stored_documents_hold_no_code(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    codes = [await make_code(db, codes_settings, codes_clock, kind) for kind in ("short", "long")]
    async for doc in db[store.COLLECTION].find({}):
        text = repr(doc)
        assert all(c not in text and c.lower() not in text for c in codes)
        assert len(doc["_id"]) == 32


async def test_expired_lapsed_reservation_and_unknown(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    verifier = make_verifier(db, codes_settings, codes_clock)
    short = await make_code(db, codes_settings, codes_clock, "short")
    other = await make_code(db, codes_settings, codes_clock, "short")
    held = await verifier.reserve(other, SOURCE)
    assert held is not None
    codes_clock.advance(3 * 60)  # the reservation (2 minutes) lapses: another upload may take the code
    taken = await verifier.reserve(other, SOURCE)
    assert taken is not None and taken.token != held.token
    assert not await verifier.confirm(held)  # the late first upload no longer holds it
    assert await verifier.confirm(taken)
    codes_clock.advance(58 * 60)  # 61 minutes after issue: the short code has expired
    before = rejected("short", "expired")
    assert await verifier.reserve(short, SOURCE) is None
    assert rejected("short", "expired") == before + 1
    assert await verifier.reserve("ZZZZZZ", SOURCE) is None
    assert await verifier.reserve(str(uuid.uuid4()), SOURCE) is None
    for malformed in ("", "ABC", "A" * 5000, "not a code at all", "1234567"):
        assert await verifier.reserve(malformed, SOURCE) is None


async def test_long_code_validity_is_day_d_to_end_of_d_plus_7_paris(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    import datetime as dt

    service = CodeService(db, codes_settings, codes_clock)
    day = dt.date(2024, 3, 12)  # two days ahead of the test clock (2024-03-10)
    [batch] = [b async for b in service.issue_long_lot("t", 1, day)]
    code = batch[0]
    assert code.valid_from == dt.datetime(2024, 3, 11, 23, 0, tzinfo=dt.UTC)  # 00:00 CET
    assert code.valid_until == dt.datetime(2024, 3, 19, 23, 0, tzinfo=dt.UTC)  # end of D+7
    verifier = make_verifier(db, codes_settings, codes_clock)
    assert await verifier.reserve(code.code, SOURCE) is None  # not yet valid
    codes_clock.set(code.valid_until.timestamp() - 1)
    res = await verifier.reserve(code.code, SOURCE)
    assert res is not None
    await verifier.release(res)
    codes_clock.set(code.valid_until.timestamp())
    assert await verifier.reserve(code.code, SOURCE) is None


async def test_revoked_code_is_refused(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    service = CodeService(db, codes_settings, codes_clock)
    verifier = make_verifier(db, codes_settings, codes_clock)
    for kind in KINDS:
        code = await make_code(db, codes_settings, codes_clock, kind)
        assert await service.revoke(code)
        assert not await service.revoke(code)
        assert await verifier.reserve(code, SOURCE) is None


async def test_jwt_codes_checked(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    verifier = make_verifier(db, codes_settings, codes_clock)
    now = int(codes_clock.now())
    day = 86_400
    refused = [
        sign_jwt_code(CODES_JWT_KEY, CODES_JWT_KID, "a", now + 3600),  # iat in the future
        sign_jwt_code(CODES_JWT_KEY, CODES_JWT_KID, "b", now - 10 * day - 1),  # older than 10 days
        sign_jwt_code(CODES_JWT_KEY, "other-kid", "c", now),  # unknown key id
        sign_jwt_code(ec.generate_private_key(ec.SECP256R1()), CODES_JWT_KID, "d", now),  # bad signature
    ]
    for token in refused:
        assert await verifier.reserve(token, SOURCE) is None
    ok = sign_jwt_code(CODES_JWT_KEY, CODES_JWT_KID, "e", now + 30)  # within the skew
    res = await verifier.reserve(ok, SOURCE)
    assert res is not None and await verifier.confirm(res)
    same_jti = sign_jwt_code(CODES_JWT_KEY, CODES_JWT_KID, "e", now - 100)  # another JWT, same jti
    assert await verifier.reserve(same_jti, SOURCE) is None
    codes_clock.advance(10 * day)
    late = sign_jwt_code(CODES_JWT_KEY, CODES_JWT_KID, "f", now)
    assert await verifier.reserve(late, SOURCE) is None


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_reserves_exactly_one_wins(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock, kind: str
) -> None:
    code = await make_code(db, codes_settings, codes_clock, kind)
    verifier = make_verifier(db, codes_settings, codes_clock)
    results = await asyncio.gather(*(verifier.reserve(code, f"198.51.100.{i}") for i in range(12)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1


async def test_two_clients_race_one_code(
    db: AsyncDatabase, mongo_uri: str, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    """Two API processes = two database clients: exactly one reserve and one confirm succeed."""
    codes = [await make_code(db, codes_settings, codes_clock, "short") for _ in range(5)]
    other_client = mongo_client(mongo_uri)
    try:
        a = make_verifier(db, codes_settings, codes_clock)
        b = make_verifier(other_client[db.name], codes_settings, codes_clock)
        for code in codes:
            ra, rb = await asyncio.gather(a.reserve(code, "192.0.2.10"), b.reserve(code, "192.0.2.11"))
            assert (ra is None) != (rb is None)
        results = await asyncio.gather(*(v.reserve(codes[0], SOURCE) for v in (a, b)))
        assert results == [None, None]  # all held
    finally:
        await other_client.close()


async def test_rate_limit_locks_out_a_guessing_source(
    db: AsyncDatabase, tmp_path: object, codes_clock: ManualClock
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        codes_rate_limit_failures=3,
        codes_rate_limit_window=60,
        codes_rate_limit_lockout=600,
        **codes_settings_overrides(),
    )
    verifier = make_verifier(db, settings, codes_clock)
    good = await make_code(db, settings, codes_clock, "short")
    assert REGISTRY.get_sample_value("robert_codes_rate_limit_failures") == 3
    assert REGISTRY.get_sample_value("robert_codes_rate_limit_lockout_seconds") == 600
    lockouts = REGISTRY.get_sample_value("robert_codes_lockouts_total") or 0
    for guess in ("AAAAAA", "AAAAAB"):
        assert await verifier.reserve(guess, "203.0.113.7") is None
    codes_clock.advance(61)  # the window passed: failures start again from zero
    for guess in ("AAAAAC", "AAAAAD", "AAAAAE"):
        assert await verifier.reserve(guess, "203.0.113.7") is None
    assert REGISTRY.get_sample_value("robert_codes_lockouts_total") == lockouts + 1
    before = rejected("unknown", "rate_limited")
    assert await verifier.reserve(good, "203.0.113.7") is None  # locked out: even a good code fails
    assert rejected("unknown", "rate_limited") == before + 1
    # Another API process (another verifier) sees the same lock-out; another source is not affected.
    other = make_verifier(db, settings, codes_clock)
    assert await other.reserve(good, "203.0.113.7") is None
    res = await other.reserve(good, "203.0.113.8")
    assert res is not None
    await other.release(res)
    codes_clock.advance(601)
    assert await verifier.reserve(good, "203.0.113.7") is not None


@pytest.mark.slow
async def test_parallel_guesses_from_one_source_check_the_store_exactly_the_limit(
    db: AsyncDatabase, mongo_uri: str, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    """Issue 10 item 4: 500 concurrent guesses from one source (two API processes = two database
    clients) reach the code store exactly ``codes_rate_limit_failures`` times, not 131."""
    limit = codes_settings.codes_rate_limit_failures
    other_client = mongo_client(mongo_uri)
    try:
        verifiers = [
            make_verifier(db, codes_settings, codes_clock),
            make_verifier(other_client[db.name], codes_settings, codes_clock),
        ]
        checked = rejected("short", "unknown")
        limited = rejected("unknown", "rate_limited")
        guesses = [f"Q{i:05d}" for i in range(500)]
        results = await asyncio.gather(
            *(verifiers[i % 2].reserve(g, "203.0.113.99") for i, g in enumerate(guesses))
        )
        assert results == [None] * 500
        assert rejected("short", "unknown") - checked == limit
        assert rejected("unknown", "rate_limited") - limited == 500 - limit
        doc = await db[ratelimit.COLLECTION].find_one({})
        assert doc is not None and doc["locked_until"] > dt.datetime.fromtimestamp(codes_clock.now(), dt.UTC)
    finally:
        await other_client.close()


async def test_valid_codes_do_not_count_towards_the_limit(
    db: AsyncDatabase, tmp_path: object, codes_clock: ManualClock
) -> None:
    """A clinic behind one address uploading many good codes is never locked out."""
    settings = load_settings(data_dir=tmp_path, codes_rate_limit_failures=2, **codes_settings_overrides())
    verifier = make_verifier(db, settings, codes_clock)
    codes = [await make_code(db, settings, codes_clock, "short") for _ in range(5)]
    assert await verifier.reserve("ZZZZZZ", SOURCE) is None  # one failure
    for code in codes:
        assert await verifier.reserve(code, SOURCE) is not None
    assert await verifier.reserve("ZZZZZY", SOURCE) is None  # the second failure locks
    assert await verifier.reserve(await make_code(db, settings, codes_clock, "short"), SOURCE) is None
