"""KPI settlement: the risk writes' KPI counts, added to the ``kpis`` collection exactly once.

A risk write (:mod:`.exposures`) cannot add to ``kpis`` in the same atomic step, so it leaves its counts on
the registration it writes (``kpi_pending``, ``kpi_counts``, ``kpi_run``: an outbox). :func:`settle_kpis`
adds them with :func:`robert_server.kpis.increment_once`, keyed by the run that wrote them, then clears them:
a worker dying anywhere in between leaves them for the next pass, which neither loses nor repeats them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from robert_server import kpis, registrations
from robert_server.matching.context import PassContext

MAX_ROUNDS = 1000  # outbox pages per settlement: a bound, never reached in practice


async def settle_kpis(ctx: PassContext) -> None:
    """Add the KPI counts that risk writes left on registrations (``kpi_pending``), once per run."""
    for _ in range(MAX_ROUNDS):
        with ctx.timed("db"):
            docs = await registrations.find_kpi_pending(ctx.db, ctx.config.risk_page)
        if not docs:
            return
        by_run: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            by_run.setdefault(doc.get("kpi_run") or "", []).append(doc)
        for run_id, group in by_run.items():
            await _settle_run(ctx, run_id, group)


async def _settle_run(ctx: PassContext, run_id: str, docs: list[dict[str, Any]]) -> None:
    """Add one run's counts (at most once: the run id is remembered by ``kpis``), then clear its outbox."""
    totals: Counter[str] = Counter()
    for doc in docs:
        totals.update(doc.get("kpi_counts") or {})
    gauges = {"usersAtRisk": totals.pop("usersAtRisk", 0)}
    with ctx.timed("db"):
        if await kpis.increment_once(ctx.db, ctx.today(), run_id, dict(totals), gauges):
            ctx.stats.counters.update(+totals)
        # Cleared only where kpi_run is still this run: a newer write's counts stay pending.
        await registrations.clear_kpi_pending(ctx.db, [d["_id"] for d in docs], run_id)
