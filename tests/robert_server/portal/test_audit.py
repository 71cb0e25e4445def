"""The audit trail, the per-professional limits, ``robert portal audit``, and the sessions store."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys

from robert_common.clock import ManualClock
from robert_server.portal import audit
from robert_server.portal.sessions import COLLECTION, SessionStore

KEY = b"k" * 32
T0 = dt.datetime(2024, 3, 10, 9, 58, tzinfo=dt.UTC)


async def test_limits_per_hour_and_per_day(db) -> None:
    pro = audit.pro_hash(KEY, "810000000001")
    claims = [await audit.claim(db, pro, T0, per_hour=2, per_day=3) for _ in range(3)]
    assert claims == [None, None, "hour"]
    assert await audit.claim(db, pro, T0 + dt.timedelta(minutes=5), 2, 3) is None  # 10:03: a new hour
    assert await audit.claim(db, pro, T0 + dt.timedelta(minutes=6), 2, 3) == "day"
    other = audit.pro_hash(KEY, "810000000002")
    assert await audit.claim(db, other, T0, 2, 3) is None  # limits are per professional
    await audit.release(db, pro, T0 + dt.timedelta(minutes=5))  # that code was not issued after all
    assert await audit.claim(db, pro, T0 + dt.timedelta(minutes=6), 2, 3) is None
    assert await audit.daily_counts(db, T0.date(), T0.date()) == sorted(
        [("2024-03-10", pro, 3), ("2024-03-10", other, 1)]
    )


async def test_records_hold_only_keyed_hashes(db) -> None:
    pro = audit.pro_hash(KEY, "810000000001")
    await audit.record(db, KEY, pro, "ABC123", T0, fallback=True, profession="10")
    [doc] = await audit.records(db, pro)
    assert doc["fallback"] is True and doc["code_hash"] == audit.code_hash(KEY, "ABC123")
    text = repr(doc)
    assert "810000000001" not in text and "ABC123" not in text
    assert audit.pro_hash(b"another key" * 3, "810000000001") != pro  # keyed, not a plain hash


async def test_robert_portal_audit_lists_daily_counts(db, mongo_uri: str) -> None:
    today = dt.datetime.now(dt.UTC)
    pro = audit.pro_hash(KEY, "810000000001")
    for _ in range(2):
        assert await audit.claim(db, pro, today, 10, 40) is None
    env = {**os.environ, "ROBERT_MONGODB_URI": mongo_uri, "ROBERT_MONGODB_DATABASE": db.name}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "robert_server.cli", "portal", "audit", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith("day\t") and lines[1:] == [f"{today:%Y-%m-%d}\t{pro}\t2"]


async def test_sessions_end_idle_or_absolute_and_one_time_values_are_taken_once(db) -> None:
    clock = ManualClock(1_700_000_000.0)
    store = SessionStore(db, clock, idle_seconds=900, absolute_seconds=3600)
    s = await store.create(challenge="abc")
    assert await store.take(s, "challenge") == "abc"
    assert await store.take(s, "challenge") is None  # a replayed WebAuthn answer finds nothing
    for _ in range(4):  # active every 14 minutes: the idle timeout never falls...
        clock.advance(14 * 60)
        live, expired = await store.get(s.token)
        assert live is not None and not expired
    clock.advance(5 * 60)  # ...but 61 minutes after login the absolute one does
    assert await store.get(s.token) == (None, True)
    assert await db[COLLECTION].count_documents({}) == 0
    s2 = await store.create()
    clock.advance(901)
    assert await store.get(s2.token) == (None, True)
    assert await store.get("unknown") == (None, False)
    doc = await db[COLLECTION].find_one({}) or {}
    assert s2.token not in repr(doc)  # only the token's hash is stored


async def test_purge_deletes_sessions_past_their_absolute_timeout(db) -> None:
    clock = ManualClock(1_700_000_000.0)
    store = SessionStore(db, clock, idle_seconds=3600, absolute_seconds=3600)
    old = await store.create()
    clock.advance(1800)
    young = await store.create()
    clock.advance(1801)  # the first is past 3600 s, the second is not
    assert await store.purge() == 1
    remaining = [d["_id"] async for d in db[COLLECTION].find({})]
    assert len(remaining) == 1 and old.token != young.token
    assert (await store.get(young.token))[0] is not None
