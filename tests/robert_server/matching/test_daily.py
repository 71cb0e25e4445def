"""The daily job walks the registrations by ``_id`` pages (issue 12), against the real database.

Pages of 3 registrations over 14: the purge of old exposure epochs, the clear of expired risks and the
``usersAtRisk`` recount must come out the same as over one query, and a job killed between two pages
must be taken up where it stopped, counting nothing twice. The daily job also purges expired captchas.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from robert_server import captcha, kpis, registrations
from robert_server.captcha import BuiltinCaptcha
from robert_server.matching import state
from tests.robert_server.matching.conftest import LEASE, Matching

PAGE = 3


class Crash(Exception):
    pass


async def population(m: Matching) -> dict[str, Any]:
    """14 registrations, several pages of each kind; what the daily job must do to them."""
    db, now_ntp = m.db, m.cs.time.ntp_now()
    old, recent = m.days_ago_epoch(20), m.days_ago_epoch(2)
    plain = [os.urandom(5) for _ in range(4)]
    purged = [os.urandom(5) for _ in range(4)]  # one old epoch (and one recent) each
    cleared = [os.urandom(5) for _ in range(3)]  # at risk, last contact 10 days ago
    kept = [os.urandom(5) for _ in range(3)]  # at risk, last contact 2 days ago
    await registrations.create_many(db, plain + purged + cleared + kept, m.cs.epoch_now())
    coll = registrations.collection(db)
    for id_a in purged:
        await coll.update_one({"_id": id_a}, {"$set": {"exposures": {str(old): 1.0, str(recent): 2.0}}})
    for ids, days in ((cleared, 10), (kept, 2)):
        for id_a in ids:
            fields = {"at_risk": True, "notified": True, "last_contact_ntp": now_ntp - days * 86_400}
            await coll.update_one({"_id": id_a}, {"$set": fields})
    await kpis.set_gauges_if_runs(db, None, usersAtRisk=99)  # a gauge gone wrong: the recount fixes it
    return {"purged": purged, "cleared": cleared, "kept": kept, "recent": recent}


async def check(m: Matching, pop: dict[str, Any]) -> None:
    for id_a in pop["purged"]:
        doc = await registrations.get(m.db, id_a)
        assert doc is not None and doc["exposures"] == {str(pop["recent"]): 2.0}
    for ids, at_risk in ((pop["cleared"], False), (pop["kept"], True)):
        for id_a in ids:
            doc = await registrations.get(m.db, id_a)
            assert doc is not None and doc["at_risk"] is at_risk and doc["notified"] is at_risk
    k = await kpis.report(m.db)
    assert (k["exposuresPurged"], k["riskFlagsCleared"], k["usersAtRisk"]) == (4, 3, 3)
    assert await state.daily_progress(m.db, m.today()) is None  # finished: no walk left to take up


def paged(m: Matching) -> None:
    m.config = dataclasses.replace(m.config, daily_page=PAGE)


async def test_the_daily_walk_purges_clears_and_recounts_over_several_pages(matching: Matching) -> None:
    paged(matching)
    pop = await population(matching)
    pages: list[str] = []
    assert await matching.worker(on_step=pages.append).daily_maintenance()
    assert pages.count("daily_page") == 5  # 14 registrations, 3 a page
    await check(matching, pop)
    assert not await matching.worker().daily_maintenance()  # once a day


async def test_a_daily_job_killed_between_pages_is_taken_up_where_it_stopped(matching: Matching) -> None:
    paged(matching)
    pop = await population(matching)
    done: list[str] = []

    def die_after_two_pages(name: str) -> None:
        if name == "daily_page":
            done.append(name)
            if len(done) == 2:
                raise Crash

    with pytest.raises(Crash):
        await matching.worker(on_step=die_after_two_pages, owner="dead").daily_maintenance()
    after = await state.daily_progress(matching.db, matching.today())
    ids = sorted([d["_id"] async for d in registrations.collection(matching.db).find({}, {"_id": 1})])
    assert after == ids[2 * PAGE - 1]  # two pages done

    assert not await matching.worker(owner="early").daily_maintenance()  # the dead worker's lease runs
    matching.advance(LEASE + 1)
    pages: list[str] = []
    assert await matching.worker(on_step=pages.append, owner="next").daily_maintenance()
    assert pages.count("daily_page") == 3  # the pages left, not the whole walk again
    await check(matching, pop)
    # the dead worker, were it still running, may not write its progress over the new owner's
    lease = matching.cs.clock.utcnow()
    assert not await state.save_daily_progress(matching.db, matching.today(), "dead", ids[-1], lease)


async def test_the_daily_job_purges_expired_captchas(matching: Matching) -> None:
    paged(matching)
    challenges = BuiltinCaptcha(matching.db, matching.cs.clock, ttl=300)
    for _ in range(2 * PAGE + 1):  # several pages of challenges left unanswered
        await challenges.create("IMAGE", "fr", answer="ABCDEF")
    matching.advance(301)
    fresh = await challenges.create("IMAGE", "fr", answer="ABCDEF")
    assert await matching.worker().daily_maintenance()
    left = [d["_id"] async for d in matching.db[captcha.COLLECTION].find({}, {"_id": 1})]
    assert left == [fresh]
