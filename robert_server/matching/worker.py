"""The matching worker: uploaded contacts to exposures to risk (PROTOCOL.md sections 8 and 9).

One pass (:meth:`Worker.run_once`):

1. Claim a group of up to ``claim_batches`` batches of contacts with a lease
   (:func:`robert_server.contacts.claim_batches`), until none is left.
2. Validate the whole group with ONE ``ValidateContacts`` call to the crypto service (steps 1 to 4).
3. Score each valid Contact from its valid HELLOs (:mod:`~robert_server.matching.scoring`); keep
   contacts of another country for forwarding; count every rejection by reason.
4. Add the scores to the registrations and write the risks they give (:mod:`~robert_server.matching.risk`)
   in one bulk write that applies each batch once per registration
   (:func:`robert_server.registrations.apply_batches`); registrations changed meanwhile get the scores
   batch by batch (:func:`~robert_server.registrations.add_exposures`), then a fresh evaluation.
5. Delete the group's batches, count.
6. Evaluate any registration still ``risk_pending`` (left by a crash), then, once a day, purge exposures
   older than the contagious period, clear at-risk flags 7 days after the last contact, recount gauges.

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
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from robert_common.clock import ServiceTime
from robert_common.settings import Settings
from robert_server import contacts, kpis, registrations
from robert_server.crypto_client import ContactStatus, ContactToValidate, CryptoClient, CryptoError
from robert_server.matching import risk
from robert_server.matching.scoring import ScoringParameters, score_contacts

log = logging.getLogger("robert.matcher")

STATE_COLLECTION = "matching_state"  # {_id: "daily", done_day, lease_until}: the daily job's claim
MAX_RISK_ROUNDS = 1000  # risk-pending pages per pass: a bound, never reached in practice
HELLO_VALID = 1
RECOUNT_ATTEMPTS = 5  # daily gauge recount: tries while concurrent counts move the gauge
LEASE_MARGIN = 0.2  # of the lease: a group is deleted at once only while more than this is left

# KPI counter of the HELLOs of a rejected contact, by ContactStatus; of a rejected HELLO, by verdict byte.
_CONTACT_REJECTION = {
    ContactStatus.FOREIGN_COUNTRY: "hellosRejectedForeignCountry",
    ContactStatus.UNDECRYPTABLE: "hellosRejectedUndecryptable",
    ContactStatus.UNKNOWN_IDENTITY: "hellosRejectedUnknownIdentity",
    ContactStatus.MALFORMED: "hellosRejectedMalformed",
}
_HELLO_REJECTION = {
    2: "hellosRejectedBadMac",  # HelloVerdict values
    3: "hellosRejectedTimeMismatch",
    4: "hellosRejectedBadEpoch",
}


class InjectedCrash(Exception):
    """Raised by a test's ``on_step`` hook to simulate a worker dying between two steps."""


@dataclass(frozen=True, slots=True)
class MatchingConfig:
    """Everything the worker needs from the settings."""

    scoring: ScoringParameters = ScoringParameters()
    risk: risk.RiskParameters = risk.RiskParameters()
    country_code: int = 0x21
    hello_tolerance: int = 180
    lease_seconds: float = 300.0
    risk_page: int = 500
    validate_timeout: float = 60.0
    claim_batches: int = 8  # batches claimed, validated and written together (at most APPLIED_BATCHES_KEPT)

    @classmethod
    def from_settings(cls, settings: Settings) -> MatchingConfig:
        return cls(
            scoring=ScoringParameters.from_settings(settings),
            risk=risk.RiskParameters.from_settings(settings),
            country_code=settings.country_code,
            hello_tolerance=settings.hello_tolerance,
            lease_seconds=settings.matcher_lease_seconds,
            risk_page=settings.matcher_risk_page,
            validate_timeout=max(settings.crypto_timeout * 30, 30.0),
        )


@dataclass
class PassStats:
    """What one pass did, and where its time went (seconds of wall-clock per phase)."""

    batches: int = 0
    counters: Counter[str] = field(default_factory=Counter)
    timings: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))


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
        config: MatchingConfig = MatchingConfig(),
        *,
        owner: str | None = None,
        pick: risk.DayPicker = random.choice,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.crypto = crypto
        self.time = service_time
        self.config = config
        self.owner = owner or default_owner()
        self.pick = pick
        self.on_step = on_step
        self.stats = PassStats()

    # --- the pass --------------------------------------------------------------------------------

    async def run_once(self) -> PassStats:
        """Process every claimable batch, evaluate pending risks, run the daily job if due."""
        self.stats = PassStats()
        await self._settle_kpis()  # counts a worker died before adding
        while True:
            now = self.time.clock.utcnow()
            with self._timed("db"):
                group = await contacts.claim_batches(
                    self.db, self.owner, now, self.config.lease_seconds, self.config.claim_batches
                )
            if not group:
                break
            lease_until = now + dt.timedelta(seconds=self.config.lease_seconds)
            if not await self.process_batches(group, lease_until):
                break  # the crypto service is unavailable: try again at the next pass
        await self.evaluate_pending()
        await self.daily_maintenance()
        return self.stats

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

    # --- a group of batches (PROTOCOL.md 8) --------------------------------------------------------

    async def process_batches(self, batches: Sequence[Mapping[str, Any]], lease_until: dt.datetime) -> bool:
        """Validate, score, add exposures, evaluate risk, delete the batches. False if crypto is down.

        ``lease_until``: the end of the lease this worker took on them."""
        batch_ids: list[str] = [b["_id"] for b in batches]
        if any(b.get("attempts", 0) > 3 for b in batches):
            attempts = max(b.get("attempts", 0) for b in batches)
            log.warning("contact batch retried many times", extra={"attempts": attempts})
        packed: list[dict[str, Any]] = [c for b in batches for c in b["contacts"]]
        try:
            with self._timed("grpc"):
                results = await self.crypto.validate_contacts(
                    [ContactToValidate(c["ebid"], c["ecc"], c["t"], c["th"], c["mac"]) for c in packed],
                    server_country_code=self.config.country_code,
                    hello_tolerance=self.config.hello_tolerance,
                    deadline=self.config.validate_timeout,
                )
        except CryptoError as e:
            log.warning("contact validation failed", extra={"reason": e.reason, "code": e.code.name})
            if e.unavailable:
                with self._timed("db"):
                    await contacts.release_batches(self.db, batch_ids, self.owner)
                return False
            return True  # left leased: retried after the lease, and logged each time
        self._step("validated")
        scores: dict[str, dict[bytes, dict[int, float]]] = {}
        counters: dict[str, Counter[str]] = {}
        at = 0
        for batch_id, batch in zip(batch_ids, batches, strict=True):
            n = len(batch["contacts"])
            with self._timed("scoring"):
                scores[batch_id], foreign, counters[batch_id] = self._score_batch(
                    batch["contacts"], results[at : at + n]
                )
            at += n
            if foreign:
                with self._timed("db"):
                    await contacts.store_foreign_contacts(
                        self.db, batch_id, foreign, self.time.clock.utcnow()
                    )
        self._step("foreign_stored")
        await self._apply_scores(scores)
        self._step("risk_evaluated")
        with self._timed("db"):
            done = await self._complete(batch_ids, lease_until)
            total: Counter[str] = Counter()
            for batch_id in done:
                total.update(counters[batch_id])
            await kpis.increment(self.db, self._today(), **total)
        self.stats.batches += len(done)
        self.stats.counters.update(total)
        self._step("completed")
        return True

    async def _complete(self, batch_ids: list[str], lease_until: dt.datetime) -> list[str]:
        """Delete the processed batches this worker still holds; the ids deleted (their counts are added).

        While the lease certainly runs (no other worker can have taken a batch over), one delete for
        the group; near or past its end, one delete per batch, which tells which ones were still held.
        """
        margin = dt.timedelta(seconds=self.config.lease_seconds * LEASE_MARGIN)
        if len(batch_ids) > 1 and self.time.clock.utcnow() < lease_until - margin:
            deleted = await contacts.complete_batches(self.db, batch_ids, self.owner)
            if deleted == len(batch_ids):
                return batch_ids
            # Only with clocks far apart: which batches were deleted is unknown, so count none
            # (counted at most once, as a worker dying right after a delete also does).
            log.warning("contact batches taken over while held", extra={"lost": len(batch_ids) - deleted})
            return []
        return [b for b in batch_ids if await contacts.complete_batch(self.db, b, self.owner)]

    def _score_batch(
        self, packed: list[dict[str, Any]], results: list[Any]
    ) -> tuple[dict[bytes, dict[int, float]], list[tuple[int, int, dict[str, Any]]], Counter[str]]:
        """Scores ``{id_a: {epoch: score}}``, foreign contacts, KPI counters of a validated batch.

        The valid HELLOs of every valid contact are scored together (:func:`score_contacts`)."""
        foreign: list[tuple[int, int, dict[str, Any]]] = []
        counters: Counter[str] = Counter()
        valid: list[tuple[dict[str, Any], Any]] = []
        for i, (c, r) in enumerate(zip(packed, results, strict=True)):
            counters["hellosProcessed"] += c["n"]
            if r.status == ContactStatus.VALID and len(r.verdicts) == c["n"]:
                valid.append((c, r))
                continue
            counters[_CONTACT_REJECTION.get(r.status, "hellosRejectedMalformed")] += c["n"]
            if r.status == ContactStatus.FOREIGN_COUNTRY:
                counters["contactsForeign"] += 1
                foreign.append((i, r.country_code, c))
        counters["contactsProcessed"] = len(packed)
        scores: dict[bytes, dict[int, float]] = {}
        if not valid:
            return scores, foreign, +counters
        verdicts = np.frombuffer(b"".join(r.verdicts for _, r in valid), dtype=np.uint8)
        for value, count in enumerate(np.bincount(verdicts, minlength=5).tolist()):
            if value in _HELLO_REJECTION:
                counters[_HELLO_REJECTION[value]] += count
        ok = verdicts == HELLO_VALID
        counters["hellosScored"] += int(ok.sum())
        times = np.frombuffer(b"".join(c["t"] for c, _ in valid), dtype=">u4")[ok]
        rssis = np.frombuffer(b"".join(c["rssi"] for c, _ in valid), dtype=">i2")[ok]
        index = np.repeat(np.arange(len(valid)), [c["n"] for c, _ in valid])[ok]
        contact_scores = score_contacts(times, rssis, index, len(valid), self.config.scoring)
        for (_, r), score in zip(valid, contact_scores.tolist(), strict=True):
            if score > 0.0:  # a zero score is no exposure
                by_epoch = scores.setdefault(r.id_a, {})
                by_epoch[r.epoch_id] = by_epoch.get(r.epoch_id, 0.0) + score
        return scores, foreign, +counters

    async def _apply_scores(self, scores: dict[str, dict[bytes, dict[int, float]]]) -> None:
        """Add the scores of each batch, ``{batch_id: {id_a: {epoch: score}}}``, and write the risks they
        give, one write per registration for the whole group (fast path); for any registration changed
        meanwhile, or already given one of these batches (a re-run), add batch by batch idempotently, then
        evaluate afresh (PROTOCOL.md 8 step 5, 9)."""
        merged: dict[bytes, dict[int, float]] = {}
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
        if not merged:
            return
        with self._timed("db"):
            docs = await registrations.find_for_risk(self.db, list(merged))  # unknown id_A: no document
        run_id = uuid.uuid4().hex
        updates = []
        with self._timed("risk"):
            for doc in docs:
                add = merged[doc["_id"]]
                exposures = dict(doc.get("exposures") or {})
                for e, s in add.items():
                    exposures[str(e)] = exposures.get(str(e), 0.0) + s
                d = risk.evaluate({**doc, "exposures": exposures}, self.time, self.config.risk, self.pick)
                if d.expired_epochs:
                    add = {e: s for e, s in add.items() if e not in d.expired_epochs}
                fields = self._risk_fields(doc, d, run_id)
                updates.append((doc, add, fields, list(d.expired_epochs), sources[doc["_id"]]))
        with self._timed("db"):
            applied = await registrations.apply_batches(self.db, updates)
        self._step("exposures_added")
        await self._settle_kpis()
        if applied < len(updates):
            found = [doc["_id"] for doc in docs]
            with self._timed("db"):
                written = await registrations.written_by_run(self.db, found, run_id)
                rest = [i for i in found if i not in written]
                for batch_id, by_id in scores.items():
                    part = {i: by_id[i] for i in rest if i in by_id}
                    if part:
                        await registrations.add_exposures(self.db, batch_id, part)
            await self.evaluate(rest)

    @staticmethod
    def _risk_fields(doc: Mapping[str, Any], d: risk.RiskDecision, run_id: str) -> dict[str, Any]:
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
            # The KPI counts travel with the decision and are added by _settle_kpis (exactly once).
            fields["kpi_pending"] = True
            fields["kpi_run"] = run_id
            fields["kpi_counts"] = {
                "alertedUsers": int(d.new_risk),
                "usersAboveRiskThresholdButRetentionPeriodExpired": int(d.above_threshold_expired),
                "usersAtRisk": int(d.new_risk and not doc.get("at_risk")),
            }
        return fields

    # --- risk (PROTOCOL.md 9) ----------------------------------------------------------------------

    async def evaluate(self, id_as: list[bytes]) -> None:
        """Evaluate the risk of these registrations now."""
        for start in range(0, len(id_as), self.config.risk_page):
            with self._timed("db"):
                docs = await registrations.find_for_risk(
                    self.db, id_as[start : start + self.config.risk_page]
                )
            await self._evaluate_docs(docs)

    async def evaluate_pending(self) -> None:
        """Evaluate every registration still marked ``risk_pending`` (e.g. left by a crash)."""
        for _ in range(MAX_RISK_ROUNDS):
            with self._timed("db"):
                docs = await registrations.find_risk_pending(self.db, self.config.risk_page)
            if not docs:
                return
            await self._evaluate_docs(docs)

    async def _evaluate_docs(self, docs: list[dict[str, Any]]) -> None:
        """Evaluate, write (each only if unchanged since read), and count what was written."""
        if not docs:
            return
        run_id = uuid.uuid4().hex
        updates = []
        decisions = {}
        with self._timed("risk"):
            for doc in docs:
                d = risk.evaluate(doc, self.time, self.config.risk, self.pick)
                updates.append((doc, self._risk_fields(doc, d, run_id), list(d.expired_epochs)))
                decisions[doc["_id"]] = (doc, d)
        with self._timed("db"):
            await registrations.write_risk(self.db, updates)
        await self._settle_kpis()

    async def _settle_kpis(self) -> None:
        """Add the KPI counts that risk writes left on registrations (``kpi_pending``), once per run.

        Counted with :func:`kpis.increment_once` keyed by the run that wrote them, then cleared: a worker
        dying anywhere in between leaves them for the next pass, which neither loses nor repeats them.
        """
        for _ in range(MAX_RISK_ROUNDS):
            with self._timed("db"):
                docs = await registrations.find_kpi_pending(self.db, self.config.risk_page)
            if not docs:
                return
            by_run: dict[str, list[dict[str, Any]]] = {}
            for doc in docs:
                by_run.setdefault(doc.get("kpi_run") or "", []).append(doc)
            for run_id, group in by_run.items():
                totals: Counter[str] = Counter()
                for doc in group:
                    totals.update(doc.get("kpi_counts") or {})
                gauges = {"usersAtRisk": totals.pop("usersAtRisk", 0)}
                with self._timed("db"):
                    if await kpis.increment_once(self.db, self._today(), run_id, dict(totals), gauges):
                        self.stats.counters.update(+totals)
                    await registrations.clear_kpi_pending(self.db, [d["_id"] for d in group], run_id)

    # --- daily job (PROTOCOL.md 9) -----------------------------------------------------------------

    async def daily_maintenance(self) -> bool:
        """Once a day (service clock), by one worker: purge, clear expired risks, recount. True if run."""
        today = self._today()
        if not await self._claim_daily(today):
            return False
        with self._timed("db"):
            purged = await self._purge_exposures()
            cleared = await self._clear_expired_risks()
            await kpis.increment(self.db, today, exposuresPurged=purged, riskFlagsCleared=cleared)
            await self._recount_gauges()
            await self.db[STATE_COLLECTION].update_one(
                {"_id": "daily"}, {"$set": {"done_day": today.isoformat(), "lease_until": contacts.UNCLAIMED}}
            )
        log.info("daily matching maintenance", extra={"exposures_purged": purged, "risks_cleared": cleared})
        return True

    async def _recount_gauges(self) -> None:
        """Set ``usersAtRisk`` to the registrations at risk, consistently with the runs counted into it
        (a compare-and-set: counting again if a concurrent worker counted a run meanwhile)."""
        for _ in range(RECOUNT_ATTEMPTS):
            runs = await kpis.counted_runs(self.db)
            at_risk = await registrations.count_at_risk_counted(self.db, runs)
            if await kpis.set_gauges_if_runs(self.db, runs, usersAtRisk=at_risk):
                return
        log.warning("usersAtRisk not recounted: counts kept changing")  # still kept by increments

    async def _claim_daily(self, today: dt.date) -> bool:
        """Conditional claim of today's daily job (a lease, so a crashed run is taken up again)."""
        state = self.db[STATE_COLLECTION]
        now = self.time.clock.utcnow()
        try:
            await state.insert_one({"_id": "daily", "done_day": None, "lease_until": contacts.UNCLAIMED})
        except DuplicateKeyError:
            pass
        result = await state.update_one(
            {"_id": "daily", "done_day": {"$ne": today.isoformat()}, "lease_until": {"$lt": now}},
            {
                "$set": {
                    "lease_until": now + dt.timedelta(seconds=self.config.lease_seconds),
                    "owner": self.owner,
                }
            },
        )
        return result.modified_count == 1

    async def _purge_exposures(self) -> int:
        """Drop exposure epochs older than the contagious period from every registration."""
        current = self.time.current_epoch()
        purged = 0
        async for page in registrations.iter_exposed(self.db, self.config.risk_page):
            expired = {}
            for doc in page:
                epochs = [int(e) for e in doc.get("exposures") or {}]
                old = risk.expired_epochs(
                    dict.fromkeys(epochs, 0.0), current, self.config.risk.contagious_period_days
                )
                if old:
                    expired[doc["_id"]] = old
                    purged += len(old)
            await registrations.drop_exposure_epochs(self.db, expired)
        return purged

    async def _clear_expired_risks(self) -> int:
        """Clear the at-risk flag 7 days after the last contact (PROTOCOL.md 9)."""
        now_ntp = self.time.ntp_now()
        days = self.config.risk.risk_retention_days
        cleared = 0
        async for page in registrations.iter_at_risk(self.db, self.config.risk_page):
            expired = [d for d in page if risk.risk_expired(d.get("last_contact_ntp"), now_ntp, days)]
            cleared += await registrations.clear_risks(self.db, expired)
        return cleared

    # --- helpers -----------------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return risk.today(self.time)

    def _step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    def _timed(self, phase: str) -> _Timer:
        return _Timer(self.stats.timings, phase)


class _Timer:
    """Adds the wall-clock time of a ``with`` block to ``timings[phase]``."""

    __slots__ = ("timings", "phase", "start")

    def __init__(self, timings: defaultdict[str, float], phase: str) -> None:
        self.timings = timings
        self.phase = phase
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.phase] += time.perf_counter() - self.start
