"""What every part of a matching pass shares: its settings, its figures, and the handles it works with.

:class:`MatchingConfig` is read once from the settings; :class:`PassStats` collects what one pass did and
where its time went; :class:`PassContext` carries both with the database, the clock and the test hooks to
the modules of the pass (:mod:`.validation`, :mod:`.exposures`, :mod:`.settlement`, :mod:`.daily`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ServiceTime
from robert_common.settings import Settings
from robert_server.matching import risk
from robert_server.matching.scoring import ScoringParameters


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
    orphan_grace_seconds: float = 24 * 3600.0  # identities without a registration: deleted after this
    max_attempts: int = 5  # failed attempts at a batch before it is parked (robert_server.dead_letters)
    daily_page: int = 1000  # registrations per page of the daily job's _id-ordered walk
    daily_pause: float = 0.0  # seconds between two pages of that walk

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
            orphan_grace_seconds=settings.identity_orphan_grace_hours * 3600,
            max_attempts=settings.matcher_max_attempts,
            daily_page=settings.matcher_daily_page,
            daily_pause=settings.matcher_daily_pause,
        )


@dataclass
class PassStats:
    """What one pass did, and where its time went (seconds of wall-clock per phase)."""

    batches: int = 0
    counters: Counter[str] = field(default_factory=Counter)
    timings: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def timed(self, phase: str) -> _Timer:
        """``with stats.timed("db"):`` adds the block's wall-clock time to ``timings["db"]``."""
        return _Timer(self.timings, phase)


@dataclass
class PassContext:
    """The database, clock, settings and figures of the current pass, and the tests' hooks.

    ``pick`` chooses the lastContactDate offset (tests make it certain); ``on_step(name)`` is called between
    steps (tests inject crashes there). ``stats`` is replaced at the start of each pass."""

    db: AsyncDatabase
    time: ServiceTime
    config: MatchingConfig
    owner: str
    pick: risk.DayPicker
    on_step: Callable[[str], None] | None = None
    stats: PassStats = field(default_factory=PassStats)

    def timed(self, phase: str) -> _Timer:
        return self.stats.timed(phase)

    def step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)

    def today(self) -> dt.date:
        """The KPI day, on the service clock."""
        return risk.today(self.time)


class _Timer:
    """Adds the wall-clock time of a ``with`` block to ``timings[phase]`` (a plain class: it runs on every
    database call, where a generator-based context manager would cost more)."""

    __slots__ = ("timings", "phase", "start")

    def __init__(self, timings: defaultdict[str, float], phase: str) -> None:
        self.timings = timings
        self.phase = phase
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.phase] += time.perf_counter() - self.start
