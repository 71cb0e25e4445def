"""Drives virtual phones through a scenario against a running system.

The run is a list of *steps* at scenario times (seconds after day 0, 00:00 UTC): registrations (when a
phone joins), reports (when a phone is diagnosed: a code from the issuer, then ``/report``), matching
runs (every ``matching.every_hours`` and after each report), and poll rounds (every phone calls
``/status`` once per ``polling.every_hours``; a last round ends the run). Between steps the BLE model
(simulator/ble.py) turns encounters into HELLOs: the emitter builds each one with its EBID of that
epoch and its ``K_A,mac``; the receiver keeps it with its own collection time and RSSI.

Time moves by the system's clock-shift file (``ROBERT_CLOCK_SHIFT_FILE``, re-read by every server
process at most once a second): before each step the runner writes ``shift = virtual time - real
time`` and waits for the processes to see it, so a multi-day scenario takes minutes. Only phones that
will report keep what they hear (nobody else's list ever leaves the phone, so the server sees exactly
the same thing). Everything random comes from the scenario seed.

Dummy uploads (``dummies.per_phone_per_day`` in the scenario): during each poll round every registered
phone also sends a dummy ``/report`` with probability ``rate x hours between rounds / 24``; the status
and length of every /report answer, real or dummy, are kept in the result (``report_answers``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from robert_common.clock import SECONDS_PER_DAY, Clock, ManualClock, unix_to_ntp, write_clock_shift
from simulator.ble import Reception, receptions
from simulator.groundtruth import ground_truth
from simulator.phone import Phone
from simulator.report import AT_RISK, PhoneOutcome, SimulationResult, progress_bar
from simulator.scenario import Scenario

# Order of steps at the same time: join first, then reports, matching, and polls last.
REGISTER, REPORT, MATCH, POLL = 0, 1, 2, 3
STEP_NAMES = {REGISTER: "register", REPORT: "report", MATCH: "match", POLL: "poll"}
POLL_OFFSET = 5400  # poll rounds at 01:30, 07:30 ...: after the matching runs at 01:00, 07:00 ...
MATCH_OFFSET = 3600
MIN_FINAL_GAP = 2700  # a last poll round only if 45 min after the previous (status_min_epoch_gap)


class TimeControl(Protocol):
    """Moves the system's time; ``clock`` is what the virtual phones read."""

    @property
    def clock(self) -> Clock: ...  # read-only: an implementation may hold a subclass (ManualClock...)

    async def move_to(self, unix_seconds: float) -> None: ...


class ShiftFileTime:
    """Time through the clock-shift file every server process re-reads (at most once a second)."""

    def __init__(self, shift_file: Path, settle_seconds: float = 1.2) -> None:
        self.shift_file = shift_file
        self.settle_seconds = settle_seconds
        self.clock = _ShiftedClock(_read_shift(shift_file))

    async def move_to(self, unix_seconds: float) -> None:
        shift = unix_seconds - time.time()
        if shift + time.time() < self.clock.now() - 1:
            raise RuntimeError("the simulation cannot move the system's time backwards")
        write_clock_shift(self.shift_file, shift)
        self.clock.shift = shift
        await asyncio.sleep(self.settle_seconds)  # every process re-reads the file within a second


class ManualTime:
    """Time of an in-process system sharing one :class:`ManualClock` (tests)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    async def move_to(self, unix_seconds: float) -> None:
        self.clock.set(unix_seconds)


class _ShiftedClock(Clock):
    """Real time plus a shift held in memory: exactly what the servers compute from the file."""

    def __init__(self, shift: float) -> None:
        super().__init__(None)
        self.shift = shift

    def now(self) -> float:
        return time.time() + self.shift


def _read_shift(path: Path) -> float:
    try:
        return float(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0


@dataclass
class Backend:
    """What the runner needs from the system besides the phone API."""

    get_code: Callable[[], Awaitable[str]]  # a fresh code that unlocks /report
    run_matcher: Callable[[], Awaitable[None]]  # one matching pass, returning when it is done
    # Scenarios with countries: a code issued by that country's system (default: get_code). The
    # matching step must then match in every country and forward between them (see RunOptions).
    get_code_in: Callable[[str], Awaitable[str]] | None = None

    async def code(self, country: str) -> str:
        return await (self.get_code_in(country) if self.get_code_in and country else self.get_code())


@dataclass(frozen=True)
class CountryServer:
    """One country's system (scenarios with countries): its phone API and registration key."""

    base_url: str
    server_public_key: bytes


@dataclass(order=True, frozen=True)
class Step:
    t: int
    kind: int
    who: str = ""


@dataclass
class RunOptions:
    base_url: str
    server_public_key: bytes  # SPKI DER of the registration key (apps embed it)
    start_unix: float | None = None  # day 0, 00:00 UTC; default: the next UTC midnight of the system's time
    concurrency: int = 8  # requests in flight during a poll round or registrations
    show_progress: bool = True
    record_all: bool = False  # keep HELLOs heard by every phone, not only by those that will report
    on_step: Callable[[Step], None] | None = None
    countries: dict[str, CountryServer] | None = None  # by scenario country name; None: one system


def build_steps(scenario: Scenario) -> list[Step]:
    """Every step of a run, in order (see the module docstring)."""
    steps = {Step(p.joins_at, REGISTER, p.name) for p in scenario.phones.values()}
    steps |= {Step(d.at, REPORT, d.who) for d in scenario.diagnoses}
    if scenario.match_after_reports:
        steps |= {Step(d.at, MATCH) for d in scenario.diagnoses}
    end = scenario.duration
    steps |= {Step(t, MATCH) for t in range(MATCH_OFFSET, end, scenario.match_every)}
    polls = list(range(POLL_OFFSET, end, scenario.poll_every))
    if not polls or end - 60 - polls[-1] >= MIN_FINAL_GAP:
        polls.append(end - 60)
    steps |= {Step(t, POLL) for t in polls}
    return sorted(steps)


def next_utc_midnight(unix_seconds: float) -> float:
    day = dt.datetime.fromtimestamp(unix_seconds, tz=dt.UTC).date() + dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


class Runner:
    """One simulation of ``scenario`` against the system at ``options.base_url``."""

    def __init__(self, scenario: Scenario, options: RunOptions, time_control: TimeControl, backend: Backend):
        self.scenario = scenario
        self.options = options
        self.time = time_control
        self.backend = backend
        self.outcomes = {name: PhoneOutcome(name, country=p.country) for name, p in scenario.phones.items()}
        self.phones: dict[str, Phone] = {}
        self.events: list[tuple[int, str, str]] = []
        self.start_unix = 0.0
        self._recorders = {d.who: d.at for d in scenario.diagnoses}
        self._pending: list[tuple[float, int, Reception]] = []  # heap of receptions not yet applied
        self._next_encounter = 0
        self._seq = 0
        self.missing_keys = 0  # HELLOs an emitter could not build (no tuple for that epoch)
        self._dummy_rng = random.Random(f"{scenario.seed}:dummies")
        self.report_answers: dict[str, list[tuple[int, int]]] = {"real": [], "dummy": []}

    async def run(self) -> SimulationResult:
        wall = time.monotonic()
        opts = self.options
        self.start_unix = opts.start_unix or next_utc_midnight(self.time.clock.now())
        for d in self.scenario.diagnoses:
            self.outcomes[d.who].diagnosed = True
        steps = build_steps(self.scenario)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            self.phones = {name: self._phone(p.country, http) for name, p in self.scenario.phones.items()}
            with progress_bar(disable=not opts.show_progress) as progress:
                task = progress.add_task(self.scenario.name, total=self.scenario.duration, status="")
                t_prev = None
                for step in steps:
                    if step.t != t_prev:
                        self._hear_until(step.t)
                        await self.time.move_to(self.start_unix + step.t)
                        t_prev = step.t
                    progress.update(task, completed=step.t, status=f"{_when(step.t)} {STEP_NAMES[step.kind]}")
                    await self._do(step)
                    if opts.on_step is not None:
                        opts.on_step(step)
                progress.update(task, completed=self.scenario.duration, status="done")
        truth = ground_truth(self.scenario)
        return SimulationResult(
            self.scenario, truth, self.outcomes, self.start_unix, time.monotonic() - wall, self.events,
            self.report_answers,
        )  # fmt: skip

    def _phone(self, country: str, http: aiohttp.ClientSession) -> Phone:
        """A virtual phone of ``country``'s system (the one system when the scenario has no countries)."""
        opts, server = self.options, None
        if country and opts.countries is not None:
            server = opts.countries.get(country)
            if server is None:
                raise ValueError(f"no system given for country {country!r} of the scenario")
        url, key = (
            (server.base_url, server.server_public_key) if server else (opts.base_url, opts.server_public_key)
        )
        return Phone(url, key, clock=self.time.clock, http=http)

    # --- steps ---------------------------------------------------------------------------------

    async def _do(self, step: Step) -> None:
        if step.kind == REGISTER:
            await self._register(step)
        elif step.kind == REPORT:
            await self._report(step)
        elif step.kind == MATCH:
            await self.backend.run_matcher()
        else:
            await self._poll_round(step)

    async def _register(self, step: Step) -> None:
        r = await self.phones[step.who].register()
        out = self.outcomes[step.who]
        out.registered = r.status == 201
        if not out.registered:
            out.errors.append(f"register: HTTP {r.status}")
        self.events.append((step.t, step.who, "register"))

    async def _report(self, step: Step) -> None:
        phone, out = self.phones[step.who], self.outcomes[step.who]
        if not phone.registered:
            out.errors.append("report: not registered")
            return
        # the app keeps what it heard for the contagious period only
        oldest = unix_to_ntp(self.start_unix + step.t) - 14 * SECONDS_PER_DAY
        phone.heard = [h for h in phone.heard if h.time_collected >= oldest]
        try:
            code = await self.backend.code(self.scenario.phones[step.who].country)
        except Exception as e:  # noqa: BLE001 - any issuer failure is a result of the run, not a crash
            out.errors.append(f"code issuer: {type(e).__name__}")
            return
        r = await phone.report(code)
        self.report_answers["real"].append((r.status, r.size))
        out.reported = r.status == 200
        out.hellos_uploaded = len(phone.heard) if out.reported else 0
        if not out.reported:
            out.errors.append(f"report: HTTP {r.status}")
        self.events.append((step.t, step.who, "report"))

    async def _poll_round(self, step: Step) -> None:
        limit = asyncio.Semaphore(self.options.concurrency)

        async def poll(name: str) -> None:
            async with limit:
                r = await self.phones[name].status()
            out = self.outcomes[name]
            out.polls += 1
            if r.status != 200:
                out.poll_errors += 1
                if f"status: HTTP {r.status}" not in out.errors:
                    out.errors.append(f"status: HTTP {r.status}")
            elif isinstance(r.body, dict) and r.body.get("riskLevel") == AT_RISK and out.notified_at is None:
                out.notified_at = step.t
                self.events.append((step.t, name, "notified"))

        async def dummy(name: str) -> None:
            async with limit:
                r = await self.phones[name].dummy_report()
            self.outcomes[name].dummies += 1
            self.report_answers["dummy"].append((r.status, r.size))
            if r.status != 200 and f"dummy report: HTTP {r.status}" not in self.outcomes[name].errors:
                self.outcomes[name].errors.append(f"dummy report: HTTP {r.status}")

        registered = [n for n, p in self.phones.items() if p.registered]
        await asyncio.gather(*(poll(n) for n in registered), *(dummy(n) for n in self._dummies(registered)))

    def _dummies(self, registered: list[str]) -> list[str]:
        """The phones that send a dummy upload in this poll round (a name twice: two dummies)."""
        expected = self.scenario.dummies_per_day * self.scenario.poll_every / SECONDS_PER_DAY
        if expected <= 0:
            return []
        whole, frac = math.floor(expected), expected - math.floor(expected)
        return [n for n in registered for _ in range(whole + (self._dummy_rng.random() < frac))]

    # --- BLE -----------------------------------------------------------------------------------

    def _hear_until(self, t: int) -> None:
        """Apply every HELLO heard before scenario time ``t`` (encounters that started are expanded)."""
        sc = self.scenario
        pocket = {p.name: p.pocket for p in sc.phones.values()}
        while self._next_encounter < len(sc.encounters) and sc.encounters[self._next_encounter].start < t:
            e = sc.encounters[self._next_encounter]
            self._next_encounter += 1
            for r in receptions(sc.seed, e.a, e.b, e.start, e.duration, e.distance_m, sc.ble, pocket):
                if self._keeps(r):
                    self._seq += 1
                    heapq.heappush(self._pending, (r.t, self._seq, r))
        while self._pending and self._pending[0][0] < t:
            _, _, r = heapq.heappop(self._pending)
            self._apply(r)

    def _keeps(self, r: Reception) -> bool:
        phones = self.scenario.phones
        if r.t < phones[r.emitter].joins_at or r.t < phones[r.receiver].joins_at:
            return False  # no app, no HELLO
        if self.options.record_all:
            return True
        reported_at = self._recorders.get(r.receiver)
        return reported_at is not None and r.t < reported_at

    def _apply(self, r: Reception) -> None:
        emitter, receiver = self.phones[r.emitter], self.phones[r.receiver]
        if not (emitter.registered and receiver.registered):
            return
        ntp = unix_to_ntp(self.start_unix + r.t)
        try:
            hello = emitter.hello(ntp)
        except KeyError:
            self.missing_keys += 1
            return
        receiver.hear(hello, r.rssi, time_collected=ntp)


def _when(t: int) -> str:
    day, rest = divmod(t, SECONDS_PER_DAY)
    return f"day {day} {rest // 3600:02d}:{rest % 3600 // 60:02d}"
