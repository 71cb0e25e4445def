"""The matching worker: uploaded contacts to exposures to risk (PROTOCOL.md sections 8 and 9).

One pass (:meth:`Worker.run_once`):

1. Claim a batch of contacts with a lease (:func:`robert_server.contacts.claim_batch`), until none is left.
2. Validate the whole batch with ONE ``ValidateContacts`` call to the crypto service (steps 1 to 4).
3. Score each valid Contact from its valid HELLOs (:mod:`~robert_server.matching.scoring`); keep
   contacts of another country for forwarding; count every rejection by reason.
4. Add the scores to the registrations in one bulk write that applies each batch once per registration
   (:func:`robert_server.registrations.add_exposures`), marking them ``risk_pending``.
5. Evaluate the risk of those registrations (:mod:`~robert_server.matching.risk`), delete the batch, count.
6. Evaluate any registration still ``risk_pending`` (left by a crash), then, once a day, purge exposures
   older than the contagious period, clear at-risk flags 7 days after the last contact, recount gauges.

Crash safety: a batch is deleted only after its exposures and risks are written; a worker that dies
earlier leaves the batch to be claimed again when its lease ends, and the re-run adds nothing twice.
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
from collections.abc import Callable, Mapping
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
            with self._timed("db"):
                batch = await contacts.claim_batch(
                    self.db, self.owner, self.time.clock.utcnow(), self.config.lease_seconds
                )
            if batch is None:
                break
            if not await self.process_batch(batch):
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

    # --- one batch (PROTOCOL.md 8) -----------------------------------------------------------------

    async def process_batch(self, batch: Mapping[str, Any]) -> bool:
        """Validate, score, add exposures, evaluate risk, delete the batch. False if crypto is down."""
        batch_id: str = batch["_id"]
        packed: list[dict[str, Any]] = batch["contacts"]
        if batch.get("attempts", 0) > 3:
            log.warning("contact batch retried many times", extra={"attempts": batch["attempts"]})
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
                    await contacts.release_batch(self.db, batch_id, self.owner)
                return False
            return True  # left leased: retried after the lease, and logged each time
        self._step("validated")
        with self._timed("scoring"):
            scores, foreign, counters = self._score_batch(packed, results)
        with self._timed("db"):
            await contacts.store_foreign_contacts(self.db, batch_id, foreign, self.time.clock.utcnow())
        self._step("foreign_stored")
        await self._apply_scores(batch_id, scores)
        self._step("risk_evaluated")
        with self._timed("db"):
            if await contacts.complete_batch(self.db, batch_id, self.owner):
                await kpis.increment(self.db, self._today(), **counters)
                self.stats.batches += 1
                self.stats.counters.update(counters)
        self._step("completed")
        return True

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

    async def _apply_scores(self, batch_id: str, scores: dict[bytes, dict[int, float]]) -> None:
        """Add the scores and write the risks they give, one write per registration (fast path); for any
        registration changed meanwhile, or already given this batch (a re-run), add idempotently then
        evaluate afresh (PROTOCOL.md 8 step 5, 9)."""
        if not scores:
            return
        with self._timed("db"):
            docs = await registrations.find_for_risk(self.db, list(scores))  # unknown id_A: no document
        run_id = uuid.uuid4().hex
        updates = []
        decisions = {}
        with self._timed("risk"):
            for doc in docs:
                add = scores[doc["_id"]]
                exposures = dict(doc.get("exposures") or {})
                for e, s in add.items():
                    exposures[str(e)] = exposures.get(str(e), 0.0) + s
                d = risk.evaluate({**doc, "exposures": exposures}, self.time, self.config.risk, self.pick)
                add = {e: s for e, s in add.items() if e not in d.expired_epochs}
                updates.append((doc, add, self._risk_fields(doc, d, run_id), list(d.expired_epochs)))
                decisions[doc["_id"]] = (doc, d)
        with self._timed("db"):
            applied = await registrations.apply_batch(self.db, batch_id, updates)
        self._step("exposures_added")
        await self._settle_kpis()
        if applied < len(updates):
            with self._timed("db"):
                written = await registrations.written_by_run(self.db, list(decisions), run_id)
            rest = {i: scores[i] for i in decisions if i not in written}
            with self._timed("db"):
                await registrations.add_exposures(self.db, batch_id, rest)
            await self.evaluate(list(rest))

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
            await kpis.set_gauges(self.db, usersAtRisk=await registrations.count_at_risk(self.db))
            await self.db[STATE_COLLECTION].update_one(
                {"_id": "daily"}, {"$set": {"done_day": today.isoformat(), "lease_until": contacts.UNCLAIMED}}
            )
        log.info("daily matching maintenance", extra={"exposures_purged": purged, "risks_cleared": cleared})
        return True

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
