"""The daily matching job (PROTOCOL.md 9), run once a day (service clock) by one worker.

Purges exposure epochs older than the contagious period, clears at-risk flags 7 days after the last
contact, counts both, recounts the ``usersAtRisk`` gauge and purges expired captchas. Which worker runs
it is decided by a claim in :mod:`.state`. Deleting orphan identities needs the crypto service: it has
a daily claim of its own (:func:`run_reconciliation`), tried at every pass until it is done.

The registrations are visited in one walk in ``_id`` order (:func:`registrations.walk`), a page of
``daily_page`` at a time, each page a short query whatever the collection's size (filters on ``at_risk``
or ``exposures`` would each scan it in one query: 45-52 s at 1 M on SecantusDB, past the client's
timeout), with ``daily_pause`` seconds between pages so that the hot paths keep the database. After each
page the walk records how far it got and extends its lease (:func:`state.save_daily_progress`): a worker
that dies leaves the job to be taken up where it stopped. Every effect is idempotent (a purge unsets
epochs, a clear is conditional, counts are of what a page changed), so a page done twice counts nothing
twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from robert_server import captcha, kpis, registrations
from robert_server.crypto_client import CryptoClient, CryptoError
from robert_server.matching import orphans, risk, state
from robert_server.matching.context import PassContext

log = logging.getLogger("robert.matcher")

RECOUNT_ATTEMPTS = 5  # gauge recount: tries while concurrent counts move the gauge


@dataclass
class Sweep:
    """What today's walk of the registrations did (this worker's part of it)."""

    purged: int = 0
    cleared: int = 0
    pages: int = 0
    at_risk: int = 0  # registrations at risk seen by the walk (counted ones), for the gauge
    whole: bool = True  # the walk went over every registration in this run (not taken up midway)
    runs: list[str] | None = None  # the KPI runs counted in the gauge when the walk started


async def run_daily(ctx: PassContext) -> bool:
    """Run today's job if no worker did yet and none is running it. True if run to its end."""
    today = ctx.today()
    now = ctx.time.clock.utcnow()
    if not await state.claim_daily(ctx.db, today, now, ctx.config.lease_seconds, ctx.owner):
        return False
    with ctx.timed("db"):
        sweep = await sweep_registrations(ctx, today)
        if sweep is None:
            log.warning("daily job taken over by another worker; stopped")
            return False
        await recount_gauges(ctx, sweep)
        captchas = await captcha.purge_expired(ctx.db, ctx.time.clock.utcnow(), ctx.config.daily_page)
        await state.finish_daily(ctx.db, today)
    log.info(
        "daily matching maintenance",
        extra={
            "exposures_purged": sweep.purged,
            "risks_cleared": sweep.cleared,
            "pages": sweep.pages,
            "captchas_purged": captchas,
        },
    )
    return True


async def sweep_registrations(ctx: PassContext, today: dt.date) -> Sweep | None:
    """Walk the registrations from where today's walk stopped (or the start): purge, clear, count.
    None if another worker took the job over meanwhile."""
    resumed = await state.daily_progress(ctx.db, today)
    out = Sweep(whole=resumed is None, runs=await kpis.counted_runs(ctx.db))
    seen = set(out.runs or [])
    after = resumed if resumed is not None else registrations.FIRST
    async for page in registrations.walk(ctx.db, ctx.config.daily_page, registrations.DAILY_FIELDS, after):
        purged, cleared, at_risk = await _one_page(ctx, page, seen)
        await kpis.increment(ctx.db, today, exposuresPurged=purged, riskFlagsCleared=cleared)
        out.purged, out.cleared, out.at_risk = (
            out.purged + purged,
            out.cleared + cleared,
            out.at_risk + at_risk,
        )
        out.pages += 1
        lease = ctx.time.clock.utcnow() + dt.timedelta(seconds=ctx.config.lease_seconds)
        if not await state.save_daily_progress(ctx.db, today, ctx.owner, page[-1]["_id"], lease):
            return None
        ctx.step("daily_page")
        if ctx.config.daily_pause:
            await asyncio.sleep(ctx.config.daily_pause)
    return out


async def _one_page(ctx: PassContext, page: list[dict[str, Any]], seen: set[str]) -> tuple[int, int, int]:
    """Purge the expired exposure epochs and clear the expired risks of one page of registrations:
    (epochs purged, flags cleared, registrations still at risk and counted in the gauge)."""
    current = ctx.time.current_epoch()
    now_ntp = ctx.time.ntp_now()
    params = ctx.config.risk
    expired: dict[bytes, list[int]] = {}
    to_clear: list[dict[str, Any]] = []
    at_risk = 0
    for doc in page:
        epochs = [int(e) for e in doc.get("exposures") or {}]
        old = risk.expired_epochs(dict.fromkeys(epochs, 0.0), current, params.contagious_period_days)
        if old:
            expired[doc["_id"]] = old
        if not doc.get("at_risk"):
            continue
        if risk.risk_expired(doc.get("last_contact_ntp"), now_ntp, params.risk_retention_days):
            to_clear.append(doc)
        elif registrations.at_risk_counted(doc, seen):
            at_risk += 1
    await registrations.drop_exposure_epochs(ctx.db, expired)
    cleared = await registrations.clear_risks(ctx.db, to_clear)
    # a flag not cleared was set again since the page was read: still at risk
    return sum(len(v) for v in expired.values()), cleared, at_risk + len(to_clear) - cleared


async def run_reconciliation(ctx: PassContext, crypto: CryptoClient) -> bool:
    """Today's identity reconciliation (:mod:`.orphans`) if no worker did it yet and none is doing it;
    its own daily claim: a crypto service that is down leaves it to a later pass (not to the next
    day, as when it was a step of the daily job). True if done now."""
    today = ctx.today()
    now = ctx.time.clock.utcnow()
    if not await state.claim_daily(
        ctx.db, today, now, ctx.config.lease_seconds, ctx.owner, job=state.IDENTITIES
    ):
        return False
    cutoff = ctx.time.clock.now() - ctx.config.orphan_grace_seconds
    try:
        with ctx.timed("db"):
            result = await orphans.delete_orphan_identities(ctx.db, crypto, cutoff)
    except CryptoError as e:
        log.warning("identity reconciliation not done yet: crypto service", extra={"reason": e.reason})
        await state.release_daily(ctx.db, state.IDENTITIES, ctx.owner)
        return False
    await state.finish_daily(ctx.db, today, job=state.IDENTITIES)
    log.info("identity reconciliation", extra={"scanned": result.scanned, "deleted": result.deleted})
    return True


async def recount_gauges(ctx: PassContext, sweep: Sweep | None = None) -> None:
    """Set ``usersAtRisk`` to the registrations at risk, consistently with the runs counted into it
    (a compare-and-set: counting again if a concurrent worker counted a run meanwhile).

    The walk's own count is used when it went over every registration in this run; otherwise (taken up
    midway, or the gauge moved) a walk that only counts."""
    if sweep is not None and sweep.whole:
        if await kpis.set_gauges_if_runs(ctx.db, sweep.runs, usersAtRisk=sweep.at_risk):
            return
    for _ in range(RECOUNT_ATTEMPTS):
        runs = await kpis.counted_runs(ctx.db)
        at_risk = await registrations.count_at_risk_counted(ctx.db, runs, ctx.config.daily_page)
        if await kpis.set_gauges_if_runs(ctx.db, runs, usersAtRisk=at_risk):
            return
    log.warning("usersAtRisk not recounted: counts kept changing")  # still kept by increments
