"""KPI settlement: the risk writes' KPI counts, added to the ``kpis`` collection exactly once.

A risk write (:mod:`.exposures`) cannot add to ``kpis`` in the same atomic step, so it leaves its counts on
the registration it writes (``kpi_pending``, ``kpi_counts``, ``kpi_run``: an outbox). :func:`settle_kpis`
adds them, then clears them: a worker dying anywhere in between leaves them for the next pass, which
neither loses nor repeats them.

Each document's counts are counted under their own key (:func:`robert_server.registrations.kpi_key`: run
and id_A), not under the run: a run's documents may be read over several pages, or while the rest of the
run is still being written by another worker, and a key per run would then refuse the later part as
"already counted" (issue 10). A page is counted in one conditional update that remembers all its keys;
if any of them was counted before (a settlement that died before clearing), each document is counted on
its own instead.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from typing import Any

from robert_server import kpis, registrations
from robert_server.matching.context import PassContext

MAX_ROUNDS = 1000  # outbox pages per settlement: a bound, never reached in practice
CLEAR_CHUNK = 25  # ids per clearing update ($in stays short)


def new_run_id(ctx: PassContext) -> str:
    """The id of one risk-writing run: its KPI day, then a random part. The day travels with the outbox,
    so counts are added to the day they were written, whenever they are settled: a settlement retried
    after midnight finds its keys in the same day's document and adds nothing twice."""
    return f"{ctx.today().isoformat()}/{uuid.uuid4().hex}"


def _day_of(run_id: str, default: dt.date) -> dt.date:
    """The KPI day a run id carries (``default`` for ids without one, written before they did)."""
    head, sep, _ = run_id.partition("/")
    if sep:
        try:
            return dt.date.fromisoformat(head)
        except ValueError:
            pass
    return default


async def settle_kpis(ctx: PassContext) -> None:
    """Add the KPI counts that risk writes left on registrations (``kpi_pending``), once per document."""
    for _ in range(MAX_ROUNDS):
        with ctx.timed("db"):
            docs = await registrations.find_kpi_pending(ctx.db, min(ctx.config.risk_page, kpis.RUNS_KEPT))
        if not docs:
            return
        await _settle_page(ctx, docs)


def _split(counts: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Day counters and gauge deltas of one outbox."""
    totals = dict(counts)
    return totals, {"usersAtRisk": totals.pop("usersAtRisk", 0)}


async def _settle_page(ctx: PassContext, docs: list[dict[str, Any]]) -> None:
    by_day: dict[dt.date, list[dict[str, Any]]] = {}
    for doc in docs:
        by_day.setdefault(_day_of(doc.get("kpi_run") or "", ctx.today()), []).append(doc)
    for day, group in by_day.items():
        await _settle_day(ctx, day, group)
    with ctx.timed("db"):
        await _clear(ctx, docs)


async def _settle_day(ctx: PassContext, day: dt.date, docs: list[dict[str, Any]]) -> None:
    keys = [registrations.kpi_key(d) for d in docs]
    runs = sorted({d.get("kpi_run") or "" for d in docs})
    totals: Counter[str] = Counter()
    for doc in docs:
        totals.update(doc.get("kpi_counts") or {})
    counters, gauges = _split(dict(totals))
    with ctx.timed("db"):
        # ``seen``: run ids, as outboxes were counted before keys were per document (upgrades).
        day_ok, gauges_ok = await kpis.increment_once_keys(ctx.db, day, keys, counters, gauges, runs)
        if day_ok and gauges_ok:
            ctx.stats.counters.update(+Counter(counters))
        else:
            await _settle_one_by_one(ctx, day, docs, keys)


async def _settle_one_by_one(
    ctx: PassContext, day: dt.date, docs: list[dict[str, Any]], keys: list[str]
) -> None:
    for doc, key in zip(docs, keys, strict=True):
        counters, gauges = _split(doc.get("kpi_counts") or {})
        seen = [doc.get("kpi_run") or ""]
        day_ok, _ = await kpis.increment_once_keys(ctx.db, day, [key], counters, {}, seen)
        await kpis.increment_once_keys(ctx.db, day, [key], {}, gauges, seen)
        if day_ok:  # False: counted before (then it is not counted into this pass's statistics)
            ctx.stats.counters.update(+Counter(counters))


async def _clear(ctx: PassContext, docs: list[dict[str, Any]]) -> None:
    """Clear the outboxes just counted, only where ``kpi_run`` is unchanged (a newer write's counts stay)."""
    by_run: dict[str, list[bytes]] = {}
    for doc in docs:
        by_run.setdefault(doc.get("kpi_run") or "", []).append(doc["_id"])
    for run_id, ids in by_run.items():
        for start in range(0, len(ids), CLEAR_CHUNK):
            await registrations.clear_kpi_pending(ctx.db, ids[start : start + CLEAR_CHUNK], run_id)
