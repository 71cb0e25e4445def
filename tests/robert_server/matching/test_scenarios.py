"""End-to-end scenarios (issue 5): real phone API, crypto service, database and matching worker; phones
are ``simulator.phone.Phone`` talking HTTP; the one ManualClock moves everything through days."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from robert_common.clock import SECONDS_PER_DAY
from robert_server import kpis, registrations
from robert_server.matching.worker import MatchingConfig, Worker
from tests.robert_server.matching.conftest import offset_zero

pytestmark = pytest.mark.api_settings(status_min_epoch_gap=0)
_codes = iter(f"C{i:05d}" for i in range(100_000))


class World:
    """Phones on one server; ``together`` makes them hear each other minute by minute."""

    def __init__(self, api: Any, http: aiohttp.ClientSession) -> None:
        self.api = api
        self.http = http
        self.clock = api.clock
        self.worker = Worker(api.db, api.crypto.matcher, api.crypto.time, MatchingConfig(), pick=offset_zero)

    async def phone(self) -> Any:
        p = self.api.phone(self.http)
        r = await p.register()
        assert r.status == 201, r.body
        return p

    def together(self, phones: list[Any], minutes: int, rssi: int = -45) -> None:
        """Every phone hears every other one, twice a minute, for ``minutes``; the clock moves on."""
        for _ in range(minutes * 2):
            now = self.clock.ntp_now()
            for a in phones:
                hello = a.hello(now)
                for b in phones:
                    if b is not a:
                        b.hear(hello, rssi, now)
            self.clock.advance(30)

    async def report(self, phone: Any) -> None:
        code = next(_codes)
        self.api.verifier.add(code)
        r = await phone.report(code)
        assert r.status == 200, r.body
        phone.heard.clear()

    async def days_pass(self, days: float, phones: list[Any]) -> None:
        """Move the clock; phones poll once a day (to keep fresh bundles), the worker runs each day."""
        whole, rest = int(days), days - int(days)
        for _ in range(whole):
            self.clock.advance(SECONDS_PER_DAY)
            for p in phones:
                assert (await p.status()).status == 200
            await self.worker.run_once()
        self.clock.advance(rest * SECONDS_PER_DAY)

    async def risk(self, phone: Any) -> int:
        self.clock.advance(60)
        r = await phone.status()
        assert r.status == 200, r.body
        return int(r.body["riskLevel"])


@pytest.fixture
async def world(api_server: Any, http: aiohttp.ClientSession) -> World:
    await registrations.ensure_indexes(api_server.db)
    return World(api_server, http)


async def test_sixty_minutes_then_a_report_puts_the_other_at_risk_not_the_reporter(world: World) -> None:
    alice, bob = await world.phone(), await world.phone()
    world.together([alice, bob], 60)
    await world.report(alice)
    assert await world.risk(bob) == 0  # not matched yet
    await world.worker.run_once()
    assert await world.risk(bob) == 4
    assert bob.last_status is not None and "lastContactDate" in bob.last_status
    assert await world.risk(alice) == 0
    k = await kpis.report(world.api.db)
    assert k["reports"] == 1 and k["alertedUsers"] == 1 and k["notifiedUsers"] == 1 and k["usersAtRisk"] == 1


async def test_five_minutes_is_no_risk(world: World) -> None:
    alice, bob = await world.phone(), await world.phone()
    world.together([alice, bob], 5)
    await world.report(alice)
    await world.worker.run_once()
    assert await world.risk(bob) == 0 and await world.risk(alice) == 0


async def test_three_phones_together_one_reports_both_others_at_risk(world: World) -> None:
    a, b, c = await world.phone(), await world.phone(), await world.phone()
    world.together([a, b, c], 45)
    await world.report(b)
    await world.worker.run_once()
    assert (await world.risk(a), await world.risk(b), await world.risk(c)) == (4, 0, 4)


@pytest.mark.parametrize(("days", "level"), [(1, 4), (7, 4), (8, 0)])
async def test_contact_days_before_the_report(world: World, days: int, level: int) -> None:
    alice, bob = await world.phone(), await world.phone()
    world.together([alice, bob], 60)
    await world.days_pass(days, [alice, bob])
    await world.report(alice)
    await world.worker.run_once()
    assert await world.risk(bob) == level
    if level == 0:
        assert (await kpis.report(world.api.db))["usersAboveRiskThresholdButRetentionPeriodExpired"] == 1


async def test_a_risk_clears_8_days_after_the_contact_and_exposures_go_after_15(world: World) -> None:
    alice, bob = await world.phone(), await world.phone()
    world.clock.advance(SECONDS_PER_DAY - world.clock.now() % SECONDS_PER_DAY + 3600)  # 01:00 UTC
    world.together([alice, bob], 60)
    await world.report(alice)
    await world.worker.run_once()
    assert await world.risk(bob) == 4
    await world.days_pass(7, [alice, bob])
    assert await world.risk(bob) == 4  # day D+7
    await world.days_pass(1, [alice, bob])
    assert await world.risk(bob) == 0  # day D+8
    reg = await registrations.get(world.api.db, _id(bob, world))
    assert reg is not None and reg["exposures"]
    await world.days_pass(7, [alice, bob])  # day D+15
    reg = await registrations.get(world.api.db, _id(bob, world))
    assert reg is not None and reg["exposures"] == {}


async def test_a_contact_with_a_phone_that_unregistered_is_discarded(world: World) -> None:
    alice, bob = await world.phone(), await world.phone()
    world.together([alice, bob], 60)
    bob_id = _id(bob, world)
    assert (await bob.unregister()).status == 200
    await world.report(alice)
    await world.worker.run_once()
    assert await registrations.get(world.api.db, bob_id) is None
    k = await kpis.report(world.api.db)
    assert k["contactsProcessed"] >= 1 and k["alertedUsers"] == 0 and k["hellosScored"] == 0


async def test_delete_exposure_history_removes_the_exposures(world: World) -> None:
    alice, bob = await world.phone(), await world.phone()
    world.together([alice, bob], 10)
    await world.report(alice)
    await world.worker.run_once()
    reg = await registrations.get(world.api.db, _id(bob, world))
    assert reg is not None and reg["exposures"]
    world.clock.advance(60)
    assert (await bob.delete_history()).status == 200
    reg = await registrations.get(world.api.db, _id(bob, world))
    assert reg is not None and reg["exposures"] == {}
    # Another 10 minutes with a new reporter: the deleted exposures do not add up to a risk.
    carol = await world.phone()
    world.together([carol, bob], 10)
    await world.report(carol)
    await world.worker.run_once()
    assert await world.risk(bob) == 0


def _id(phone: Any, world: World) -> bytes:
    """id_A of a phone, found the way the server finds it: by decrypting one of its EBIDs (test only)."""
    from crypto_backend import protocol

    epoch, ebid, _ = phone.key_of(min(phone.tuples))
    k_s = world.api.crypto.day_key_of_epoch(epoch)
    return protocol.decrypt_ebid(k_s, ebid)[1]
