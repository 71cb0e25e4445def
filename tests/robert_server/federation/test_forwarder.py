"""The forwarder (sender) against our real Federation service: batches, retries, back-off, crashes.

The sender is country 0x22 with its own database; what it forwards is matched by the receiver (0x21, the
crypto service fixture's country) with its own day keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.settings import FederationPartner
from robert_server import contacts, kpis, registrations
from robert_server.federation import outbox
from robert_server.federation.forwarder import Backoff, Forwarder
from tests.fixtures.database import fresh_database
from tests.robert_server.federation.conftest import PARTNER, US, Federation
from tests.robert_server.matching.test_worker import FULL_EPOCH


@pytest.fixture
async def sender_db(mongo_uri: str) -> AsyncIterator[AsyncDatabase]:
    async with fresh_database(mongo_uri) as database:
        yield database


class Tick:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def forwarder(
    f: Federation,
    db: AsyncDatabase,
    on_step: Callable[[str], None] | None = None,
    tick: Tick | None = None,
    **kw: Any,
) -> Forwarder:
    settings = f.settings_of(PARTNER).model_copy(update=kw)
    return Forwarder(db, settings, f.cs.clock, on_step=on_step, rand=lambda: 1.0, monotonic=tick or Tick())


async def queue(f: Federation, db: AsyncDatabase, n_batches: int, *, cc: int = US) -> list[Any]:
    """``n_batches`` uploaded batches of two contacts each for phones of the receiver, in the outbox."""
    phones = []
    for i in range(n_batches):
        heard = await f.phone()
        phones.append(heard)
        e = f.days_ago_epoch(1)
        packed = [contacts.pack_contact(f.contact(heard, e + k, cc=cc)) for k in range(2)]
        await outbox.store(db, f"report{i}:0", [(cc, p) for p in packed], f.cs.clock.utcnow())
    return phones


async def exposures(f: Federation, phone: Any) -> dict[str, float]:
    reg = await registrations.get(f.db, phone.id_a)
    assert reg is not None
    return dict(reg.get("exposures") or {})


async def test_the_outbox_reaches_the_partner_in_batches_and_is_matched_there(
    federation: Federation, sender_db: AsyncDatabase
) -> None:
    f = federation
    phones = await queue(f, sender_db, 5)
    fw = forwarder(f, sender_db, federation_batches_per_call=2)
    try:
        stats = await fw.run_once()
    finally:
        await fw.close()
    assert stats.contacts == {"forwarded_0x21": 10} and stats.failures == 0
    assert await outbox.count(sender_db) == 0
    await f.worker().run_once()
    e = f.days_ago_epoch(1)
    for p in phones:
        assert await exposures(f, p) == {
            str(e): pytest.approx(FULL_EPOCH),
            str(e + 1): pytest.approx(FULL_EPOCH),
        }
    sent, got = await kpis.report(sender_db), await kpis.report(f.db)
    assert sent["federationContactsForwarded"] == 10 and sent["federationContactsForwarded_0x21"] == 10
    assert got["federationContactsReceived_0x22"] == 10 and got["reports"] == 0


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["delivered", "counted", "deleted"])
async def test_a_forwarder_dying_anywhere_delivers_each_contact_once(
    federation: Federation, sender_db: AsyncDatabase, step: str
) -> None:
    f = federation
    phones = await queue(f, sender_db, 3)
    calls = 0

    def crash(name: str) -> None:
        nonlocal calls
        if name == step:
            calls += 1
            if calls == 2:  # the second call of the round dies: the first is done, the second half-way
                raise Crash(name)

    fw = forwarder(f, sender_db, crash, federation_batches_per_call=2)
    with pytest.raises(Crash):
        await fw.run_once()
    await fw.close()
    await f.worker().run_once()  # the receiver matches what it has meanwhile
    again = forwarder(f, sender_db)
    try:
        await again.run_once()
    finally:
        await again.close()
    await f.worker().run_once()

    assert await outbox.count(sender_db) == 0
    e = f.days_ago_epoch(1)
    for p in phones:
        assert await exposures(f, p) == {
            str(e): pytest.approx(FULL_EPOCH),
            str(e + 1): pytest.approx(FULL_EPOCH),
        }
    assert (await kpis.report(sender_db))["federationContactsForwarded_0x21"] == 6
    assert (await kpis.report(f.db))["federationContactsReceived_0x22"] == 6


async def test_an_unreachable_partner_is_retried_with_growing_back_off_and_nothing_is_lost(
    federation: Federation, sender_db: AsyncDatabase
) -> None:
    f = federation
    phones = await queue(f, sender_db, 2)
    await f.stop_service()
    tick = Tick()
    fw = forwarder(f, sender_db, tick=tick, federation_backoff_max=8.0, federation_timeout=2.0)
    try:
        waits = []
        for _ in range(5):
            stats = await fw.run_once()
            assert stats.failures == 1
            waits.append(fw.backoff[US].until - tick.now)
            assert (await fw.run_once()).failures == 0  # waiting: no call
            tick.now = fw.backoff[US].until
        assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped (jitter drawn at its top here)
        assert await outbox.count(sender_db) == 2

        await f.start_service()
        stats = await fw.run_once()
        assert stats.failures == 0 and stats.contacts == {"forwarded_0x21": 4}
        assert fw.backoff[US].failures == 0
    finally:
        await fw.close()
    await f.worker().run_once()
    assert [len(await exposures(f, p)) for p in phones] == [2, 2]


def test_the_jitter_waits_between_half_and_all_of_the_delay() -> None:
    b = Backoff(cap=100.0)
    assert b.failed(0.0, lambda: 0.0) == 0.5 and b.failed(0.0, lambda: 1.0) == 2.0
    assert b.failed(0.0, lambda: 0.5) == pytest.approx(3.0)
    b.succeeded()
    assert b.failures == 0 and b.ready(0.0)


async def test_refused_batches_are_counted_and_not_sent_again(
    federation: Federation, sender_db: AsyncDatabase
) -> None:
    f = federation
    await queue(f, sender_db, 1)
    bad = contacts.pack_contact(f.contact(await f.phone(), f.days_ago_epoch(1)))
    bad["mac"] = bad["mac"][:7]  # not 5 bytes per HELLO
    await outbox.store(sender_db, "broken:0", [(US, bad)], f.cs.clock.utcnow())
    fw = forwarder(f, sender_db)
    try:
        stats = await fw.run_once()
    finally:
        await fw.close()
    assert stats.contacts == {"forwarded_0x21": 2, "refused_by_partner_0x21": 1}
    assert await outbox.count(sender_db) == 0
    assert (await kpis.report(sender_db))["federationContactsRefusedByPartner_0x21"] == 1


async def test_contacts_of_a_country_without_partner_are_dropped_after_the_retention_period(
    federation: Federation, sender_db: AsyncDatabase
) -> None:
    f = federation
    nobody, old_partner = 0x30, US
    packed = contacts.pack_contact(f.contact(await f.phone(), f.days_ago_epoch(1), cc=nobody))
    await outbox.store(sender_db, "young:0", [(nobody, packed)], f.cs.clock.utcnow())
    long_ago = f.cs.clock.utcnow() - dt.timedelta(days=15)
    await outbox.store(
        sender_db, "old:0", [(nobody, packed), (nobody, packed), (old_partner, packed)], long_ago
    )
    fw = forwarder(f, sender_db)
    try:
        await f.stop_service()  # the partner is down: its old contacts are dropped, not sent
        stats = await fw.run_once()
        assert stats.contacts == {"dropped_0x30": 2, "dropped_0x21": 1}
        assert await outbox.countries(sender_db) == [nobody]  # the young one waits for a partner
        assert (await fw.run_once(sweep=True)).contacts == {}
    finally:
        await fw.close()
        await f.start_service()
    k = await kpis.report(sender_db)
    assert k["federationContactsDropped"] == 3 and k["federationContactsDropped_0x30"] == 2
    assert FederationPartner  # the partner list is the only way to name a country we deliver to
