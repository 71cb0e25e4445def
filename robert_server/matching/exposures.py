"""Scores to exposures and risks: the idempotent writes of PROTOCOL.md 8 step 5 and section 9.

The scores of a group of batches are merged per registration and, with the risk they give
(:func:`robert_server.matching.risk.evaluate`), written in one write per registration
(:func:`robert_server.registrations.apply_batches`). That write applies only if the registration is unchanged
since it was read and none of the batches was applied to it before. The others (changed meanwhile, or a
re-run after a crash) get the scores batch by batch, each batch at most once
(:func:`~robert_server.registrations.add_exposures`), then a fresh evaluation.

Every risk write carries a run id (``risk_run``) that tells which registrations it wrote, and leaves its KPI
counts on the registration for :mod:`.settlement` (never counted here, so never twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robert_server import registrations
from robert_server.matching import risk, settlement
from robert_server.matching.context import PassContext
from robert_server.matching.settlement import settle_kpis
from robert_server.matching.validation import Scores

MAX_PENDING_ROUNDS = 1000  # risk-pending pages per pass: a bound, never reached in practice


def merge_scores(scores: Mapping[str, Scores]) -> tuple[Scores, dict[bytes, list[str]]]:
    """``{batch_id: {id_a: {epoch: score}}}`` to the summed scores per registration, and for each
    registration the ids of the batches they come from (each applied at most once)."""
    merged: Scores = {}
    sources: dict[bytes, list[str]] = {}
    for batch_id, by_id in scores.items():
        for id_a, by_epoch in by_id.items():
            into = merged.get(id_a)
            if into is None:
                merged[id_a] = dict(by_epoch)
                sources[id_a] = [batch_id]
                continue
            for e, s in by_epoch.items():
                into[e] = into.get(e, 0.0) + s
            sources[id_a].append(batch_id)
    return merged, sources


def risk_fields(doc: Mapping[str, Any], d: risk.RiskDecision, run_id: str) -> dict[str, Any]:
    """The fields a risk write sets: the decision, the run that wrote it, and its KPI counts (the outbox)."""
    fields: dict[str, Any] = {
        "at_risk": d.at_risk,
        "latest_risk_epoch": d.latest_risk_epoch,
        "last_contact_ntp": d.last_contact_ntp,
        "last_risk_scoring_ntp": d.last_risk_scoring_ntp,
        "risk_run": run_id,
    }
    if d.new_risk:
        fields["notified"] = False  # a new risk to tell (the API counts notifiedUsers)
    if d.new_risk or d.above_threshold_expired:
        # The KPI counts travel with the decision and are added by settle_kpis (exactly once).
        fields["kpi_pending"] = True
        fields["kpi_run"] = run_id
        fields["kpi_counts"] = {
            "alertedUsers": int(d.new_risk),
            "usersAboveRiskThresholdButRetentionPeriodExpired": int(d.above_threshold_expired),
            "usersAtRisk": int(d.new_risk and not doc.get("at_risk")),
        }
    return fields


async def apply_scores(ctx: PassContext, scores: Mapping[str, Scores]) -> None:
    """Add the scores of each batch, ``{batch_id: {id_a: {epoch: score}}}``, and write the risks they give:
    one write per registration for the whole group, then the slow path for those it did not apply to."""
    merged, sources = merge_scores(scores)
    if not merged:
        return
    with ctx.timed("db"):
        docs = await registrations.find_for_risk(ctx.db, list(merged))  # unknown id_A: no document
    run_id = settlement.new_run_id(ctx)
    updates = []
    with ctx.timed("risk"):
        for doc in docs:
            add = merged[doc["_id"]]
            exposures = dict(doc.get("exposures") or {})
            for e, s in add.items():
                exposures[str(e)] = exposures.get(str(e), 0.0) + s
            d = risk.evaluate({**doc, "exposures": exposures}, ctx.time, ctx.config.risk, ctx.pick)
            if d.expired_epochs:  # dropped by this same write: adding to them would bring them back
                add = {e: s for e, s in add.items() if e not in d.expired_epochs}
            fields = risk_fields(doc, d, run_id)
            updates.append((doc, add, fields, list(d.expired_epochs), sources[doc["_id"]]))
    with ctx.timed("db"):
        applied = await registrations.apply_batches(ctx.db, updates)
    ctx.step("exposures_added")
    await settle_kpis(ctx)
    if applied < len(updates):
        await _apply_batch_by_batch(ctx, scores, [doc["_id"] for doc in docs], run_id)


async def _apply_batch_by_batch(
    ctx: PassContext, scores: Mapping[str, Scores], found: list[bytes], run_id: str
) -> None:
    """The registrations of ``found`` that run ``run_id`` did not write get each batch's scores (a batch
    already applied to one adds nothing), then a fresh risk evaluation."""
    with ctx.timed("db"):
        written = await registrations.written_by_run(ctx.db, found, run_id)
        rest = [i for i in found if i not in written]
        for batch_id, by_id in scores.items():
            part = {i: by_id[i] for i in rest if i in by_id}
            if part:
                await registrations.add_exposures(ctx.db, batch_id, part)
    await evaluate(ctx, rest)


async def evaluate(ctx: PassContext, id_as: list[bytes]) -> None:
    """Evaluate the risk of these registrations now (PROTOCOL.md 9)."""
    page = ctx.config.risk_page
    for start in range(0, len(id_as), page):
        with ctx.timed("db"):
            docs = await registrations.find_for_risk(ctx.db, id_as[start : start + page])
        await _evaluate_docs(ctx, docs)


async def evaluate_pending(ctx: PassContext) -> None:
    """Evaluate every registration still marked ``risk_pending`` (e.g. left by a crash)."""
    for _ in range(MAX_PENDING_ROUNDS):
        with ctx.timed("db"):
            docs = await registrations.find_risk_pending(ctx.db, ctx.config.risk_page)
        if not docs:
            return
        await _evaluate_docs(ctx, docs)


async def _evaluate_docs(ctx: PassContext, docs: list[dict[str, Any]]) -> None:
    """Evaluate, write (each only if unchanged since read), and count what was written."""
    if not docs:
        return
    run_id = settlement.new_run_id(ctx)
    updates = []
    with ctx.timed("risk"):
        for doc in docs:
            d = risk.evaluate(doc, ctx.time, ctx.config.risk, ctx.pick)
            updates.append((doc, risk_fields(doc, d, run_id), list(d.expired_epochs)))
    with ctx.timed("db"):
        await registrations.write_risk(ctx.db, updates)
    await settle_kpis(ctx)
