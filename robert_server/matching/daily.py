"""The daily matching job (PROTOCOL.md 9), run once a day (service clock) by one worker.

Purges exposure epochs older than the contagious period, clears at-risk flags 7 days after the last
contact, counts both, and recounts the ``usersAtRisk`` gauge. Which worker runs it is decided by a claim
in :mod:`.state`; each step is safe to run again if the worker dies midway.
"""

from __future__ import annotations

import logging

from robert_server import kpis, registrations
from robert_server.crypto_client import CryptoClient, CryptoError
from robert_server.matching import orphans, risk, state
from robert_server.matching.context import PassContext

log = logging.getLogger("robert.matcher")

RECOUNT_ATTEMPTS = 5  # gauge recount: tries while concurrent counts move the gauge


async def run_daily(ctx: PassContext, crypto: CryptoClient | None = None) -> bool:
    """Run today's job if no worker did yet and none is running it. True if run.

    With ``crypto``, also delete identities left without a registration (:mod:`.orphans`)."""
    today = ctx.today()
    now = ctx.time.clock.utcnow()
    if not await state.claim_daily(ctx.db, today, now, ctx.config.lease_seconds, ctx.owner):
        return False
    with ctx.timed("db"):
        purged = await purge_exposures(ctx)
        cleared = await clear_expired_risks(ctx)
        await kpis.increment(ctx.db, today, exposuresPurged=purged, riskFlagsCleared=cleared)
        await recount_gauges(ctx)
        if crypto is not None:
            await reconcile_identities(ctx, crypto)
        await state.finish_daily(ctx.db, today)
    log.info("daily matching maintenance", extra={"exposures_purged": purged, "risks_cleared": cleared})
    return True


async def reconcile_identities(ctx: PassContext, crypto: CryptoClient) -> None:
    """Orphan identities (:mod:`.orphans`); a crypto service that is down leaves them to the next day."""
    cutoff = ctx.time.clock.now() - ctx.config.orphan_grace_seconds
    try:
        result = await orphans.delete_orphan_identities(ctx.db, crypto, cutoff)
    except CryptoError as e:
        log.warning("identity reconciliation not done: crypto service", extra={"reason": e.reason})
        return
    log.info("identity reconciliation", extra={"scanned": result.scanned, "deleted": result.deleted})


async def purge_exposures(ctx: PassContext) -> int:
    """Drop exposure epochs older than the contagious period from every registration; how many."""
    current = ctx.time.current_epoch()
    days = ctx.config.risk.contagious_period_days
    purged = 0
    async for page in registrations.iter_exposed(ctx.db, ctx.config.risk_page):
        expired = {}
        for doc in page:
            epochs = [int(e) for e in doc.get("exposures") or {}]
            old = risk.expired_epochs(dict.fromkeys(epochs, 0.0), current, days)
            if old:
                expired[doc["_id"]] = old
                purged += len(old)
        await registrations.drop_exposure_epochs(ctx.db, expired)
    return purged


async def clear_expired_risks(ctx: PassContext) -> int:
    """Clear the at-risk flag 7 days after the last contact (PROTOCOL.md 9); how many were cleared."""
    now_ntp = ctx.time.ntp_now()
    days = ctx.config.risk.risk_retention_days
    cleared = 0
    async for page in registrations.iter_at_risk(ctx.db, ctx.config.risk_page):
        expired = [d for d in page if risk.risk_expired(d.get("last_contact_ntp"), now_ntp, days)]
        cleared += await registrations.clear_risks(ctx.db, expired)
    return cleared


async def recount_gauges(ctx: PassContext) -> None:
    """Set ``usersAtRisk`` to the registrations at risk, consistently with the runs counted into it
    (a compare-and-set: counting again if a concurrent worker counted a run meanwhile)."""
    for _ in range(RECOUNT_ATTEMPTS):
        runs = await kpis.counted_runs(ctx.db)
        at_risk = await registrations.count_at_risk_counted(ctx.db, runs)
        if await kpis.set_gauges_if_runs(ctx.db, runs, usersAtRisk=at_risk):
            return
    log.warning("usersAtRisk not recounted: counts kept changing")  # still kept by increments
