"""The matching worker: uploaded contacts to exposures to risk (PROTOCOL.md sections 8 and 9).

This module is the claim loop and the order of the steps; each step lives in a module named after it.
One pass (:meth:`Worker.run_once`):

1. Claim a group of up to ``claim_batches`` batches of contacts with a lease
   (:func:`robert_server.contacts.claim_batches`), until none is left.
2. Validate the whole group with ONE ``ValidateContacts`` call to the crypto service (steps 1 to 4), and
   score each valid Contact from its valid HELLOs; keep contacts of another country for forwarding; count
   every rejection by reason (:mod:`.validation`).
3. Add the scores to the registrations and write the risks they give, each batch applied once per
   registration (:mod:`.exposures`); the KPI counts of those writes are settled (:mod:`.settlement`).
4. Delete the group's batches, count.
5. Evaluate any registration still ``risk_pending`` (left by a crash), then the daily job (:mod:`.daily`).

Groups keep the database operations per batch few: the worker's CPU goes mostly to each operation's
client overhead. Crash safety: a batch is deleted only after its exposures and risks are written; a worker
that dies earlier leaves the batch to be claimed again when its lease ends, and the re-run adds nothing
twice (batch by batch, whatever groups the re-run forms).
Workers on many machines share the work through the database alone. Every time comes from the one
injected clock (``ServiceTime``), so a ``ManualClock`` or ``ROBERT_CLOCK_SHIFT_FILE`` moves the worker too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ServiceTime
from robert_server import contacts, kpis
from robert_server.crypto_client import CryptoClient, CryptoError
from robert_server.federation import counters as federation_counters
from robert_server.federation import outbox
from robert_server.matching import daily, exposures, parking, risk, validation
from robert_server.matching.context import MatchingConfig, PassContext, PassStats
from robert_server.matching.settlement import settle_kpis

__all__ = ["MatchingConfig", "PassStats", "Worker", "default_owner"]

log = logging.getLogger("robert.matcher")


def batch_key(batch_id: str) -> str:
    """The key under which a contact batch's KPI counters are added (once) to the day's document."""
    return f"contacts:{batch_id}"


LEASE_MARGIN = 0.2  # of the lease: a group is deleted at once only while more than this is left
DEFAULT_CONFIG = MatchingConfig()  # the settings' defaults (tests, benchmarks)
# What a batch's own data raises when the worker cannot read it (a missing field, a value of the wrong
# type or size): that batch is isolated and, in the end, parked. Anything else propagates.
UNREADABLE = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, struct.error)


def default_owner() -> str:
    """A worker id unique across machines and restarts (no secret in it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """One matching worker. ``on_step(name)`` is called between steps (tests inject crashes there);
    ``pick`` chooses the lastContactDate offset (tests make it certain)."""

    def __init__(
        self,
        db: AsyncDatabase,
        crypto: CryptoClient,
        service_time: ServiceTime,
        config: MatchingConfig = DEFAULT_CONFIG,
        *,
        owner: str | None = None,
        pick: risk.DayPicker = random.choice,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.crypto = crypto
        self.ctx = PassContext(db, service_time, config, owner or default_owner(), pick, on_step)

    @property
    def stats(self) -> PassStats:
        """What the current (or last) pass did."""
        return self.ctx.stats

    @property
    def config(self) -> MatchingConfig:
        return self.ctx.config

    # --- the pass --------------------------------------------------------------------------------

    async def run_once(self) -> PassStats:
        """Process every claimable batch, evaluate pending risks, run the daily job if due."""
        ctx = self.ctx
        ctx.stats = PassStats()
        await settle_kpis(ctx)  # counts a worker died before adding
        while True:
            now = ctx.time.clock.utcnow()
            with ctx.timed("db"):
                group = await contacts.claim_batches(
                    ctx.db, ctx.owner, now, ctx.config.lease_seconds, ctx.config.claim_batches
                )
            if not group:
                break
            group = await self._park_exhausted(group)
            if not group:
                continue
            lease_until = now + dt.timedelta(seconds=ctx.config.lease_seconds)
            if not await self.process_batches(group, lease_until):
                break  # the crypto service is unavailable: try again at the next pass
        await self.evaluate_pending()
        await self.daily_maintenance()
        return ctx.stats

    async def run_forever(self, interval: float, stop: asyncio.Event) -> None:
        """``robert matcher``: a pass every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                stats = await self.run_once()
                if stats.batches:
                    log.info("matching pass", extra={"batches": stats.batches, **stats.counters})
            except (CryptoError, OSError, ConnectionError) as e:
                log.warning(
                    "matching pass failed; retrying at the next one", extra={"error": type(e).__name__}
                )
            except Exception:  # a bug must not stop matching for everyone: log and go on
                log.exception("matching pass failed")
            remaining = interval - (time.monotonic() - started)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(remaining, 0.0))
            except TimeoutError:
                pass

    async def evaluate_pending(self) -> None:
        """Evaluate every registration still marked ``risk_pending`` (e.g. left by a crash)."""
        await exposures.evaluate_pending(self.ctx)

    async def daily_maintenance(self) -> bool:
        """Once a day (service clock), by one worker: purge, clear expired risks, recount (True if run
        now); and, as soon as the crypto service answers, delete the orphan identities."""
        ran = await daily.run_daily(self.ctx)
        if self.crypto is not None:
            await daily.run_reconciliation(self.ctx, self.crypto)
        return ran

    # --- a group of batches (PROTOCOL.md 8) --------------------------------------------------------

    async def process_batches(self, batches: Sequence[Mapping[str, Any]], lease_until: dt.datetime) -> bool:
        """Validate, score, add exposures, evaluate risk, delete the batches. False if crypto is down.

        ``lease_until``: the end of the lease this worker took on them."""
        ctx = self.ctx
        batch_ids: list[str] = [b["_id"] for b in batches]
        if any(b.get("attempts", 0) > 3 for b in batches):
            attempts = max(b.get("attempts", 0) for b in batches)
            log.warning("contact batch retried many times", extra={"attempts": attempts})
        try:
            scored = await self._validate_and_score(batches)
        except CryptoError as e:
            log.warning("contact validation failed", extra={"reason": e.reason, "code": e.code.name})
            if e.unavailable:
                with ctx.timed("db"):
                    await contacts.release_batches(ctx.db, batch_ids, ctx.owner)
                return False
            return await self._isolate(batches, lease_until, e)
        except UNREADABLE as e:  # a batch this worker cannot read (a corrupt document, a bug on its data)
            log.warning("contact batch not processed", extra={"batches": len(batches)}, exc_info=True)
            return await self._isolate(batches, lease_until, e)
        ctx.step("foreign_stored")
        await exposures.apply_scores(ctx, {b: s.scores for b, s in scored.items()})
        ctx.step("risk_evaluated")
        with ctx.timed("db"):
            counted = await self._count(batches, scored)
            ctx.step("counted")
            done = await self._complete(batch_ids, lease_until)
        ctx.stats.batches += len(done)
        ctx.stats.counters.update(counted)
        ctx.step("completed")
        return True

    async def _count(
        self, batches: Sequence[Mapping[str, Any]], scored: Mapping[str, validation.BatchScores]
    ) -> Counter[str]:
        """Add the KPI counters of the batches, each exactly once whatever happens next: keyed by its
        batch id (:func:`kpis.increment_once_keys`), before its deletion, on the day it arrived (the
        same document however late or often it is completed). A worker dying between counting and
        deleting, or a batch taken over by another worker, is counted again by whoever completes it,
        which adds nothing. (Deleting first, as before, lost the counts of a worker killed in between.)
        What this call added."""
        ctx = self.ctx
        today = ctx.today()
        by_day: dict[dt.date, list[str]] = {}
        for b in batches:
            arrived = b.get("received_at")
            by_day.setdefault(arrived.date() if arrived else today, []).append(b["_id"])
        counted: Counter[str] = Counter()
        for day, batch_ids in by_day.items():
            total: Counter[str] = Counter()
            for batch_id in batch_ids:
                total.update(scored[batch_id].counters)
            keys = [batch_key(b) for b in batch_ids]
            if (await kpis.increment_once_keys(ctx.db, day, keys, dict(total), {}))[0]:
                counted.update(total)
                continue
            for batch_id, key in zip(batch_ids, keys, strict=True):  # some were counted: one by one
                counters = scored[batch_id].counters
                if (await kpis.increment_once_keys(ctx.db, day, [key], dict(counters), {}))[0]:
                    counted.update(counters)
        return counted

    async def _isolate(
        self, batches: Sequence[Mapping[str, Any]], lease_until: dt.datetime, error: Exception
    ) -> bool:
        """A group failed for a reason other than an unavailable crypto service: split it in halves
        until the batch that fails is alone, so its neighbours go through now. A batch failing alone
        stays leased (tried again after its lease) until its ``max_attempts``-th claim, then is parked
        as a dead letter (:mod:`.parking`). False if the crypto service became unavailable."""
        if len(batches) > 1:
            half = len(batches) // 2
            if not await self.process_batches(batches[:half], lease_until):
                with self.ctx.timed("db"):
                    await contacts.release_batches(
                        self.ctx.db, [b["_id"] for b in batches[half:]], self.ctx.owner
                    )
                return False
            return await self.process_batches(batches[half:], lease_until)
        batch = batches[0]
        if batch.get("attempts", 0) >= self.config.max_attempts:
            await parking.park(self.ctx, batch, parking.reason_of(error))
        return True

    async def _park_exhausted(self, group: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Batches claimed more than ``max_attempts`` times (each claim that never completed: a batch
        that kills or stalls its worker) are parked unprocessed; the rest of the group is returned."""
        keep = []
        for batch in group:
            if batch.get("attempts", 0) > self.config.max_attempts:
                await parking.park(self.ctx, batch, "attempts exhausted")
            else:
                keep.append(batch)
        return keep

    async def _validate_and_score(
        self, batches: Sequence[Mapping[str, Any]]
    ) -> dict[str, validation.BatchScores]:
        """Each batch's scores, ``{batch_id: BatchScores}``, its contacts of another country stored for
        forwarding. One ValidateContacts call for the group (it raises CryptoError)."""
        ctx = self.ctx
        packed = [c for b in batches for c in b["contacts"]]
        with ctx.timed("grpc"):
            results = await validation.validate(self.crypto, ctx.config, packed)
        ctx.step("validated")
        scored: dict[str, validation.BatchScores] = {}
        at = 0
        for batch in batches:
            n = len(batch["contacts"])
            with ctx.timed("scoring"):
                s = validation.score_batch(batch["contacts"], results[at : at + n], ctx.config.scoring)
            at += n
            scored[batch["_id"]] = s
            if s.foreign:
                await self._forward(batch, s)
        return scored

    async def _forward(self, batch: Mapping[str, Any], s: validation.BatchScores) -> None:
        """Contacts of another country go to the federation outbox, in this same step (idempotent per
        batch). A partner may forward only contacts for us: those of a forwarded batch that are not are
        refused (counted for that partner), never forwarded again."""
        origin = batch.get("origin")
        if origin is None:
            with self.ctx.timed("db"):
                await outbox.store(
                    self.ctx.db,
                    batch["_id"],
                    [(cc, c) for _, cc, c in s.foreign],
                    self.ctx.time.clock.utcnow(),
                )
            return
        n = s.counters.pop("contactsForeign", 0)
        s.counters.update(federation_counters.per_partner(federation_counters.REFUSED, origin, n))
        s.foreign.clear()

    async def _complete(self, batch_ids: list[str], lease_until: dt.datetime) -> list[str]:
        """Delete the processed batches this worker still holds (their counts are in, see :meth:`_count`);
        the ids deleted.

        While the lease certainly runs (no other worker can have taken a batch over), one delete for
        the group; near or past its end, one delete per batch, which tells which ones were still held.
        """
        ctx = self.ctx
        margin = dt.timedelta(seconds=ctx.config.lease_seconds * LEASE_MARGIN)
        if len(batch_ids) > 1 and ctx.time.clock.utcnow() < lease_until - margin:
            deleted = await contacts.complete_batches(ctx.db, batch_ids, ctx.owner)
            if deleted == len(batch_ids):
                return batch_ids
            # Only with clocks far apart: which batches were deleted is unknown (their counts are in,
            # once: a worker completing one of them again adds nothing).
            log.warning("contact batches taken over while held", extra={"lost": len(batch_ids) - deleted})
            return []
        return [b for b in batch_ids if await contacts.complete_batch(ctx.db, b, ctx.owner)]
