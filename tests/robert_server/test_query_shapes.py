"""Every query and write of the hot paths has a shape the database serves by key (issue 12, docs/sharding.md).

A PyMongo command listener on the client that the real API, crypto service, code verifier and matching
worker use, during a real flow (register, status, report with a real code, a matching pass, status
again), fails the test if a hot-path command:

- filters on ``_id`` but puts another field before it (SecantusDB's planner tries fields in the order
  given: ``{at_risk: false, _id: a}`` scanned 100 k documents, ``{_id: a, at_risk: false}`` read one);
- has a top-level ``$or``/``$and``/``$nor`` (a full scan on SecantusDB, even beside ``_id``);
- is a ``findAndModify`` (atomic claims are conditional ``update_one`` calls);
- has an ``$in`` of more than 25 values (its cost grows with the square of the list: chunk it);
- reads or writes a sharded collection without naming its shard key (``_id``): on a sharded cluster it
  would go to every shard. The only exceptions are the per-pass outbox scans of :data:`BROADCAST`.

The matcher's daily job visits every registration (and captcha, and identity): each of its reads must be
one page of an ``_id``-ordered walk (``{_id: {$gt: last}}`` sorted on ``_id`` with a limit) or a read by
ids, never a filter on another field alone nor a count: on SecantusDB such a query over 1 M registrations
answered after 44-52 s, past the client's socket timeout (:func:`daily_violations`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.mongo import IN_CHUNK, CommandRecorder
from robert_server import contacts, registrations
from robert_server.captcha import BuiltinCaptcha
from robert_server.codes import make_verifier
from robert_server.matching.worker import MatchingConfig, Worker
from tests.fixtures.codes import make_code
from tests.fixtures.database import fresh_database

# Shard key of each sharded collection (docs/sharding.md); the others live unsharded on one shard.
SHARD_KEYS = {"registrations": "_id", "identities": "_id", "captchas": "_id"}
# Queries of a sharded collection that go to every shard by design: each matching pass looks for the
# registrations its outboxes hold (a partial index on each shard holds only those), not per operation.
BROADCAST = {("registrations", frozenset({"risk_pending"})), ("registrations", frozenset({"kpi_pending"}))}
NO_FIND_AND_MODIFY = {"registrations", "contacts", "identities"}


def filters_of(name: str, command: dict[str, Any]) -> list[dict[str, Any]]:
    """The query filters of one CRUD command."""
    if name == "find":
        return [command.get("filter") or {}]
    if name == "update":
        return [u.get("q") or {} for u in command["updates"]]
    if name == "delete":
        return [d.get("q") or {} for d in command["deletes"]]
    if name in ("count", "distinct", "findAndModify"):
        return [command.get("query") or {}]
    if name == "aggregate":
        first = (command.get("pipeline") or [{}])[0]
        return [first.get("$match", {})]
    return []


def longest_in(value: Any) -> int:
    """The length of the longest ``$in``/``$nin`` list anywhere in a filter."""
    if isinstance(value, dict):
        own = max(
            (len(v) for k, v in value.items() if k in ("$in", "$nin") and isinstance(v, list)), default=0
        )
        return max([own, *(longest_in(v) for v in value.values())])
    if isinstance(value, list):
        return max((longest_in(v) for v in value), default=0)
    return 0


def violations(name: str, coll: str, command: dict[str, Any]) -> list[str]:
    """What is wrong with one command's shape (empty: nothing)."""
    out = []
    if name == "findAndModify" and coll in NO_FIND_AND_MODIFY:
        out.append(f"findAndModify on {coll}")
    if name == "insert" and coll in SHARD_KEYS:
        out += [f"insert into {coll} without its shard key" for d in command["documents"] if "_id" not in d]
    for f in filters_of(name, command):
        keys = list(f)
        if "_id" in keys and keys[0] != "_id":
            out.append(f"{coll}: {keys[0]!r} before _id in {keys}")
        if any(k in ("$or", "$and", "$nor") for k in keys):
            out.append(f"{coll}: top-level $or/$and/$nor in {keys}")
        if longest_in(f) > IN_CHUNK:
            out.append(f"{coll}: $in of {longest_in(f)} values (chunks of at most {IN_CHUNK})")
        key = SHARD_KEYS.get(coll)
        if key and key not in f and (coll, frozenset(keys)) not in BROADCAST:
            out.append(f"{coll}: no shard key {key!r} in {keys}")
    return out


WALKED = {"registrations", "captchas", "identities"}  # the collections the daily job goes over whole
DAILY_MAX_PAGE = 10_000


def daily_violations(name: str, coll: str, command: dict[str, Any]) -> list[str]:
    """What is wrong with one command of the daily job: :func:`violations`, and every read of a walked
    collection is an ``_id`` page (``$gt``, sorted on ``_id``, limited) or a read by ids."""
    out = violations(name, coll, command)
    if coll not in WALKED:
        return out
    if name in ("count", "distinct", "aggregate"):
        return [*out, f"{coll}: {name} in the daily job (a scan in one query)"]
    if name != "find":
        return out
    f = command.get("filter") or {}
    by_id = f.get("_id")
    if not f or next(iter(f)) != "_id":
        return [*out, f"{coll}: daily read not by _id: {list(f)}"]
    if isinstance(by_id, dict) and "$gt" in by_id:
        limit = command.get("limit") or 0
        if dict(command.get("sort") or {}) != {"_id": 1} or not 0 < abs(limit) <= DAILY_MAX_PAGE:
            out.append(f"{coll}: _id range without sort on _id and a limit: {command}")
    elif isinstance(by_id, dict) and set(by_id) - {"$in", "$eq"}:
        out.append(f"{coll}: daily read by {set(by_id)} of _id")
    return out


def test_the_checker_flags_each_bad_shape() -> None:
    """The checker itself: each rule fires on its bad shape and not on the good one."""
    ids = list(range(IN_CHUNK + 1))
    bad = [
        ("find", "registrations", {"filter": {"at_risk": False, "_id": b"a"}}),
        ("update", "codes", {"updates": [{"q": {"$or": [{"_id": 1}, {"state": "x"}]}}]}),
        ("findAndModify", "contacts", {"query": {"_id": "x"}}),
        ("find", "identities", {"filter": {"_id": {"$in": ids}}}),
        ("delete", "captchas", {"deletes": [{"q": {"expires_at": 1}}]}),
        ("insert", "registrations", {"documents": [{"x": 1}]}),
    ]
    for name, coll, command in bad:
        assert violations(name, coll, command), (name, coll, command)
    good = [
        ("find", "registrations", {"filter": {"_id": b"a", "at_risk": False}}),
        ("find", "identities", {"filter": {"_id": {"$in": ids[:IN_CHUNK]}}}),
        ("find", "registrations", {"filter": {"kpi_pending": True}}),
        ("find", "contacts", {"filter": {"lease_until": {"$lt": 1}}}),
    ]
    for name, coll, command in good:
        assert not violations(name, coll, command), (name, coll, command)
    page = {"filter": {"_id": {"$gt": b"a"}}, "sort": {"_id": 1}, "limit": 1000}
    bad_daily = [
        ("find", "registrations", {"filter": {"at_risk": True}}),
        ("find", "registrations", {"filter": {"exposures": {"$ne": {}}}}),
        ("find", "registrations", {"filter": {"_id": {"$gt": b"a"}}}),  # no sort, no limit
        ("find", "registrations", {**page, "sort": {"at_risk": 1}}),
        ("find", "captchas", {"filter": {"expires_at": {"$lte": 1}}}),
        ("find", "identities", {"filter": {"created_at": {"$lt": 1}}, "sort": {"_id": 1}, "limit": 500}),
        ("count", "registrations", {"query": {"_id": {"$gt": b"a"}}}),
    ]
    for name, coll, command in bad_daily:
        assert daily_violations(name, coll, command), (name, coll, command)
    good_daily = [
        ("find", "registrations", page),
        ("find", "identities", {**page, "filter": {"_id": {"$gt": b""}, "created_at": {"$lt": 1}}}),
        ("find", "registrations", {"filter": {"_id": {"$in": ids[:IN_CHUNK]}}}),
        ("update", "registrations", {"updates": [{"q": {"_id": b"a", "at_risk": True}}]}),
        ("update", "matching_state", {"updates": [{"q": {"_id": "daily", "owner": "w"}}]}),
    ]
    for name, coll, command in good_daily:
        assert not daily_violations(name, coll, command), (name, coll, command)


recorder = CommandRecorder()


@pytest.fixture
async def db(mongo_uri: str) -> AsyncIterator[AsyncDatabase]:
    """The test database through a client with the command listener: the real code under test uses it."""
    async with fresh_database(mongo_uri, listeners=[recorder]) as database:
        try:
            yield database
        finally:
            recorder.active = False
            recorder.take()


@pytest.mark.api_settings(codes_pepper="test-pepper-0123456789abcdef")
async def test_hot_paths_name_their_key_and_avoid_full_scan_shapes(api_server: Any) -> None:
    db, clock = api_server.db, api_server.clock
    crypto = api_server.crypto
    api_server.use_verifier(make_verifier(db, api_server.settings, clock))
    code = await make_code(db, api_server.settings, clock, "short")
    worker = Worker(db, crypto.matcher, crypto.time, MatchingConfig(lease_seconds=60))
    await registrations.ensure_indexes(db)
    await contacts.ensure_indexes(db)
    await worker.run_once()  # today's daily job (scans by design, once a day) done before recording
    captcha = BuiltinCaptcha(db, clock)

    recorder.active = True
    async with aiohttp.ClientSession() as http:
        # The captcha of a registration (the API runs with captcha off: the same calls, direct).
        assert await captcha.verify(await captcha.create("IMAGE", "fr", answer="ABCDEF"), "ABCDEF")
        phones = [api_server.phone(http) for _ in range(30)]
        for r in await asyncio.gather(*(p.register() for p in phones)):
            assert r.status == 201, r.body
        alice, bob = phones[0], phones[1]
        for _ in range(5):
            bob.hear(alice.hello(), rssi=-50)
            clock.advance(60)
        for p in phones[2:]:
            bob.hear(p.hello(), rssi=-70)
        for r in await asyncio.gather(*(p.status() for p in phones)):  # batched by the API
            assert r.status == 200, r.body
        assert (await bob.report("ZZZZZZ")).status == 401  # a failed attempt: the rate limiter counts it
        r = await bob.report(code)
        assert r.status == 200, r.body
        stats = await worker.run_once()
        assert stats.batches == 1
        clock.advance(api_server.settings.status_min_epoch_gap * 900 + 900)
        for r in await asyncio.gather(*(p.status() for p in phones)):
            assert r.status == 200, r.body
    recorder.active = False
    seen = recorder.take()

    # The flow did what it says: each collection of the hot paths was used.
    touched = {(name, coll) for name, coll, _ in seen}
    for expected in [
        ("insert", "registrations"),
        ("find", "registrations"),
        ("update", "registrations"),
        ("insert", "identities"),
        ("find", "identities"),
        ("insert", "contacts"),
        ("update", "contacts"),
        ("delete", "contacts"),
        ("update", "codes"),
        ("update", "code_attempts"),
        ("update", "kpis"),
        ("insert", "captchas"),
        ("update", "captchas"),
    ]:
        assert expected in touched, f"the flow sent no {expected[0]} to {expected[1]}"
    assert any(longest_in(filters_of(n, c)) > 1 for n, coll, c in seen if coll == "identities")  # batched

    problems = [
        f"{name} {coll}: {v}" for name, coll, command in seen for v in violations(name, coll, command)
    ]
    assert not problems, "\n".join(problems)

    # The next day's daily job, over several pages, with a risk to clear and captchas to purge.
    one = await registrations.collection(db).find_one({}, {"_id": 1})
    assert one is not None
    await registrations.collection(db).update_one({"_id": one["_id"]}, {"$set": {"at_risk": True}})
    await captcha.create("IMAGE", "fr", answer="ABCDEF")
    clock.advance(86_400)
    daily = Worker(db, crypto.matcher, crypto.time, MatchingConfig(lease_seconds=60, daily_page=7))
    recorder.active = True
    assert await daily.daily_maintenance()
    recorder.active = False
    seen = recorder.take()
    touched = {(name, coll) for name, coll, _ in seen}
    for expected in [
        ("find", "registrations"),
        ("update", "registrations"),
        ("find", "captchas"),
        ("delete", "captchas"),
        ("find", "identities"),
        ("update", "matching_state"),
    ]:
        assert expected in touched, f"the daily job sent no {expected[0]} to {expected[1]}"
    pages = [c for name, coll, c in seen if (name, coll) == ("find", "registrations")]
    assert len(pages) >= 5  # 30 registrations and more, 7 a page
    problems = [
        f"{name} {coll}: {v}" for name, coll, command in seen for v in daily_violations(name, coll, command)
    ]
    assert not problems, "\n".join(problems)
