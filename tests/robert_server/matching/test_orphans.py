"""Identities left without a registration (issue 10 item 7), against the real crypto service and database.

A registration that fails during a database outage leaves its identity behind when the API's own
clean-up fails too; the daily job deletes such orphans once they are older than the grace period.
"""

from __future__ import annotations

from crypto_backend.identities import COLLECTION as IDENTITIES
from robert_common.mongo import free_port
from robert_server import registrations
from robert_server.crypto_client import CryptoClient
from robert_server.matching.orphans import MIN_PAGE_FOR_SHARE, delete_orphan_identities
from robert_server.matching.worker import MatchingConfig, Worker
from tests.fixtures.crypto import CryptoService

DAY = 24 * 3600


async def identities(cs: CryptoService) -> set[bytes]:
    return {bytes(d["_id"]) async for d in cs.db[IDENTITIES].find({}, {"_id": 1})}


async def new_identity(cs: CryptoService, registered: bool) -> bytes:
    phone = await cs.register_phone()
    if registered:
        await registrations.create(cs.db, phone.id_a, cs.epoch_now(), None)
    return phone.id_a


async def test_orphans_older_than_the_grace_are_deleted_by_the_daily_job(crypto_service) -> None:
    cs = crypto_service
    kept = [await new_identity(cs, True) for _ in range(30)]
    old_orphans = [await new_identity(cs, False) for _ in range(4)]  # the outage's leftovers
    cs.clock.advance(DAY + 60)
    recent_orphan = await new_identity(cs, False)  # may be a registration in flight: left alone
    worker = Worker(cs.db, cs.matcher, cs.time, MatchingConfig(orphan_grace_seconds=DAY))
    assert await worker.daily_maintenance()
    left = await identities(cs)
    assert left == {*kept, recent_orphan}
    assert not left & set(old_orphans)


async def test_pages_are_walked_whole(crypto_service) -> None:
    cs = crypto_service
    kept = [await new_identity(cs, True) for _ in range(25)]
    orphans = [await new_identity(cs, False) for _ in range(5)]
    cs.clock.advance(60)
    result = await delete_orphan_identities(cs.db, cs.matcher, cs.clock.now(), page=7)
    assert (result.scanned, result.deleted, result.stopped) == (30, 5, False)
    assert await identities(cs) == set(kept)
    assert not set(orphans) & await identities(cs)


async def test_a_wrong_database_stops_the_pass_before_deleting(crypto_service, mongo_uri) -> None:
    """Pointed at an API database without the registrations, every identity looks orphaned."""
    cs = crypto_service
    for _ in range(MIN_PAGE_FOR_SHARE):
        await new_identity(cs, True)
    cs.clock.advance(60)
    empty = cs.db.client[cs.db.name + "_x"]
    try:
        result = await delete_orphan_identities(empty, cs.matcher, cs.clock.now())
    finally:
        await cs.db.client.drop_database(empty.name)
    assert result.stopped and result.deleted == 0
    assert len(await identities(cs)) == MIN_PAGE_FOR_SHARE


async def test_the_crypto_service_lists_only_old_identities_in_order(crypto_service) -> None:
    cs = crypto_service
    first = [await new_identity(cs, False) for _ in range(3)]
    cutoff = cs.clock.now() + 1
    cs.clock.advance(10)
    await new_identity(cs, False)
    listed = await cs.matcher.list_identities(b"", cutoff, 100)
    assert listed == sorted(first)
    assert await cs.matcher.list_identities(listed[0], cutoff, 1) == [listed[1]]


async def test_a_crypto_service_down_delays_the_reconciliation_to_a_later_pass_not_a_later_day(
    crypto_service,
) -> None:
    """``robert up`` may start the matcher before the crypto service answers: the day's reconciliation
    used to be skipped with the rest of the daily job marked done, leaving the orphans a day longer."""
    cs = crypto_service
    kept = await new_identity(cs, True)
    orphan = await new_identity(cs, False)
    cs.clock.advance(DAY + 60)
    config = MatchingConfig(orphan_grace_seconds=DAY)
    down = CryptoClient(f"127.0.0.1:{free_port()}", 0.5, settings=cs.settings, identity="matcher")
    try:
        assert await Worker(cs.db, down, cs.time, config).daily_maintenance()  # the daily job itself
    finally:
        await down.close()
    assert await identities(cs) == {kept, orphan}  # not reconciled: the crypto service did not answer
    cs.clock.advance(60)  # a later pass, the same day, the crypto service up
    assert not await Worker(cs.db, cs.matcher, cs.time, config).daily_maintenance()  # done today already
    assert await identities(cs) == {kept}
