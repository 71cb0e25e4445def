"""Chaos (issue 10, "Proof"): a bounded load run against ``robert up`` while the API, the crypto service,
the matching worker and the embedded database are each killed with SIGKILL at seeded random moments (and
started again by ``robert up``'s supervision).

Virtual phones register, poll and report with real short codes from the code issuer, as the app would:
a request whose answer is lost (5xx, connection error, timeout) is retried, a report with the same code.
The run goes in rounds; between rounds the shared clock is shifted past the minimum gap between polls,
so every phone may poll once per round. Afterwards, with everything back and the matcher drained:

1. no accepted report is lost: the batch of every report answered 200 is applied to each phone it heard;
2. nothing is counted twice: each batch is applied once (``applied_batches``), the exposures are exactly
   the scores of the applied batches' contacts, the matcher's KPIs are exactly what was matched and
   the reports counted do not exceed those stored;
3. no phone is locked out by a poll it never got an answer to: within a round, a phone gets no
   "too soon" before its first 200, and every phone is served at the end.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import pytest
from pymongo import AsyncMongoClient

from crypto_backend import protocol
from robert_common.clock import EPOCH_DURATION, Clock, write_clock_shift
from robert_common.rpc import crypto_pb2, crypto_pb2_grpc
from robert_server import kpis
from robert_server.codes.formats import normalise
from robert_server.codes.pepper import PEPPER_FILE, code_key, report_id
from robert_server.contacts import BATCH_SIZE
from robert_server.matching.scoring import score_contact
from simulator.backend import BackendError, GrpcIssuer, fetch_server_key
from simulator.phone import ApiResponse, Phone
from tests.fixtures.up import start_up, stop_up, up_child, up_children, up_env, up_ports, wait_healthy

pytestmark = pytest.mark.slow

SEED = 20_101  # the kill schedule and the contact graph
PHONES = 20
REPORTS_PER_ROUND = 2  # phones that report in each round but the first (where all register)
TARGETS_PER_REPORT = 3  # phones each reporter heard
HELLOS_PER_TARGET = 4
ROUNDS = 8  # one component killed per round: each of the four twice, in a seeded order
SPREAD = 2.0  # seconds over which the phones start their round's requests
KILL_WITHIN = 0.05  # seconds after the round's kill_after-th request
GAP_EPOCHS = 2  # ROBERT_STATUS_MIN_EPOCH_GAP
VICTIMS = {"api": "cli api", "crypto": "cli crypto", "matcher": "cli matcher", "database": "secantus"}
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)
RETRY_FOR = 90  # seconds a phone keeps retrying a request whose answers are lost
LOST = -1  # the status recorded for a connection error or a timeout


@dataclass
class Report:
    reporter: int
    code: str
    targets: list[int]
    answers: list[int] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return 200 in self.answers


@dataclass
class Run:
    phones: list[Phone]
    issuer: GrpcIssuer
    reports: list[Report] = field(default_factory=list)
    lockouts: list[str] = field(default_factory=list)  # "too soon" before the round's first 200
    answers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    sent: int = 0  # requests sent in this round
    kill_after: int = 0  # the round's kill comes once this many requests were sent
    fire: asyncio.Event = field(default_factory=asyncio.Event)


async def _call(kind: str, run: Run, request) -> ApiResponse | None:  # type: ignore[no-untyped-def]
    """One request; None when its answer is lost (connection error or timeout)."""
    run.sent += 1
    if run.sent >= run.kill_after:
        run.fire.set()
    try:
        r: ApiResponse = await request()
    except (aiohttp.ClientError, TimeoutError, OSError):
        run.answers[kind].append(LOST)
        return None
    run.answers[kind].append(r.status)
    return r


def _retry_or_fail(what: str, r: ApiResponse | None, since: float) -> None:
    """After an answer that is not the one wanted: retried (after a short pause) when it was lost or a
    5xx, for at most RETRY_FOR seconds; any other answer fails the test at once."""
    assert r is None or r.status >= 500, f"{what}: {r.status} {r.body}"
    assert asyncio.get_running_loop().time() - since < RETRY_FOR, (
        f"{what}: still no answer after {RETRY_FOR} s"
    )


async def _register(run: Run, index: int, phone: Phone) -> None:
    since = asyncio.get_running_loop().time()
    while not phone.registered:
        r = await _call("register", run, phone.register)
        if r is None or r.status != 201:
            _retry_or_fail(f"register of phone {index}", r, since)
            await asyncio.sleep(0.3)


async def _poll_once_this_round(run: Run, index: int, phone: Phone, round_: int, delay: float) -> None:
    """(Register, then) poll until a 200: a failed poll is retried at once (the next allowed attempt)."""
    await asyncio.sleep(delay)
    await _register(run, index, phone)
    since = asyncio.get_running_loop().time()
    while True:
        r = await _call("status", run, phone.status)
        if r is not None and r.status == 200:
            return
        if r is not None and r.status == 400 and "too soon" in str(r.body):
            run.lockouts.append(f"round {round_}: phone {index} refused as too soon before any answer")
            return
        _retry_or_fail(f"round {round_}: status of phone {index}", r, since)
        await asyncio.sleep(0.3)


async def _code(run: Run) -> str:
    since = asyncio.get_running_loop().time()
    while True:
        try:
            return await run.issuer.get_code()
        except BackendError:  # the database is down: the doctor tries again
            _retry_or_fail("code issuer", None, since)
            await asyncio.sleep(0.5)


async def _report(run: Run, report: Report, delay: float) -> None:
    """Upload until 200; after a lost answer the same code may be refused (it was used by the upload
    whose answer was lost, or is still held by it): tried again until its hold lapses, then given up."""
    await asyncio.sleep(delay)
    phone = run.phones[report.reporter]
    lost_at: float | None = None
    loop = asyncio.get_running_loop()
    since = loop.time()
    while True:
        r = await _call("report", run, lambda: phone.report(report.code))
        report.answers.append(LOST if r is None else r.status)
        if r is not None and r.status == 200:
            return
        _retry_or_fail(
            f"report of phone {report.reporter}", None if r is not None and r.status == 401 else r, since
        )
        if r is None or r.status >= 500:
            lost_at = lost_at or loop.time()
        elif r.status == 401 and lost_at is not None:
            if loop.time() - lost_at > 20:  # several code holds: the lost upload used the code
                return
        else:
            raise AssertionError(f"report of phone {report.reporter} refused: {r.status} {r.body}")
        await asyncio.sleep(0.5)


def _hear(reporter: Phone, target: Phone, rng: random.Random) -> None:
    """The reporter heard ``target`` a few times, one minute apart, in the current epoch."""
    now = reporter.ntp_now()
    epoch_start = target.time_start + target.epoch_now() * EPOCH_DURATION  # type: ignore[operator]
    first = max(epoch_start, now - 600)
    for i in range(HELLOS_PER_TARGET):
        at = first + 60 * i
        reporter.hear(target.hello(ntp_time=at), rssi=rng.randint(-75, -45), time_collected=at)


async def _wait_back(run_proc: subprocess.Popen[bytes], marker: str, old: int) -> None:
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        assert run_proc.poll() is None, "robert up stopped"
        found = [p for p, cmd in up_children(run_proc.pid).items() if marker in cmd]
        if found and old not in found:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{marker} not started again"
        await asyncio.sleep(0.2)


async def _kill(run: Run, up: subprocess.Popen[bytes], name: str, after: float, kills: list[str]) -> None:
    """Kill component ``name`` of ``robert up`` with SIGKILL, ``after`` seconds after the round's
    ``kill_after``-th request was sent (so that requests are in flight); wait until ``robert up`` has
    started it again."""
    await run.fire.wait()
    await asyncio.sleep(after)
    victim = up_child(up.pid, VICTIMS[name])
    os.kill(victim, signal.SIGKILL)
    kills.append(name)
    await _wait_back(up, VICTIMS[name], victim)


async def _issuer_token(env: dict[str, str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "robert_server.cli", "issuers", "add", "chaos-doctor",
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode().strip().split()[-1]


async def _drained(db) -> bool:  # type: ignore[no-untyped-def]
    if await db["contacts"].count_documents({}):
        return False
    pending = {"$or": [{"risk_pending": True}, {"kpi_pending": True}]}
    return await db["registrations"].count_documents(pending) == 0


def _batch_id(pepper: bytes, code: str) -> str:
    parsed = normalise(code)
    assert parsed is not None
    return report_id(pepper, code_key(pepper, parsed[1])) + ":0"


def _expected_scores(reporter: Phone, target: Phone) -> dict[str, float]:
    """{epoch: score} the reporter's contacts with ``target`` add to its exposures."""
    epoch_of = {ebid: epoch for epoch, (ebid, _) in target.tuples.items()}
    by_ebid: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for h in reporter.heard:
        if h.ebid in epoch_of:
            by_ebid[h.ebid].append((h.time_collected, h.rssi))
    return {str(epoch_of[ebid]): score_contact(hellos) for ebid, hellos in by_ebid.items()}


async def test_chaos_nothing_lost_nothing_twice_no_phone_locked_out(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ports = up_ports()
    shift_file = tmp_path / "clock_shift"
    write_clock_shift(shift_file, 0)
    env = up_env(
        tmp_path, ports,
        ROBERT_CLOCK_SHIFT_FILE=str(shift_file),
        ROBERT_STATUS_MIN_EPOCH_GAP=str(GAP_EPOCHS),
        ROBERT_KEYSTORE_AUTO_ROTATE="true",
        ROBERT_MATCHER_INTERVAL="1",
        ROBERT_MATCHER_LEASE_SECONDS="6",  # a batch held by a killed worker is taken over soon
        ROBERT_CODES_RESERVATION_SECONDS="4",  # a code held by a killed API is free again soon
        ROBERT_UP_MAX_RESTARTS="100",
        ROBERT_UP_RESTART_BACKOFF_MAX="1",
        ROBERT_LOG_LEVEL="WARNING",
        # The internal plane's mutual TLS has its own tests (tests/test_up.py, the fixtures run it);
        # here the test itself calls the crypto service and the code issuer, on loopback.
        ROBERT_GRPC_PLAINTEXT="true",
    )  # fmt: skip
    log_path = tmp_path / "up.log"
    up = start_up(tmp_path, env, "--without", "portal", "--without", "dev-idp", log=log_path)
    client: AsyncMongoClient | None = None
    try:
        await wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", up)
        token = await _issuer_token(env, tmp_path)
        key = await fetch_server_key(f"127.0.0.1:{ports['crypto']}")
        clock = Clock(shift_file)
        kills: list[str] = []
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as http:
            base = f"http://127.0.0.1:{ports['http']}"
            phones = [Phone(base, key, clock=clock, http=http) for _ in range(PHONES)]
            run = Run(phones, GrpcIssuer(f"127.0.0.1:{ports['codes']}", token))
            reporters = rng.sample(range(PHONES), REPORTS_PER_ROUND * (ROUNDS - 1))
            victims = [name for _ in range(ROUNDS // len(VICTIMS)) for name in VICTIMS]
            rng.shuffle(victims)
            try:
                for round_, victim in enumerate(victims):
                    # The round's load and, at a seeded moment within it, one component killed.
                    run.sent, run.kill_after, run.fire = 0, rng.randint(1, PHONES), asyncio.Event()
                    tasks = [_kill(run, up, victim, rng.uniform(0.0, KILL_WITHIN), kills)]
                    tasks += [
                        _poll_once_this_round(run, i, p, round_, rng.uniform(0, SPREAD))
                        for i, p in enumerate(phones)
                    ]
                    for reporter in reporters[REPORTS_PER_ROUND * (round_ - 1) : REPORTS_PER_ROUND * round_]:
                        others = [i for i in range(PHONES) if i != reporter]
                        report = Report(reporter, await _code(run), rng.sample(others, TARGETS_PER_REPORT))
                        for t in report.targets:
                            _hear(phones[reporter], phones[t], rng)
                        run.reports.append(report)
                        tasks.append(_report(run, report, rng.uniform(0, SPREAD)))
                    await asyncio.gather(*tasks)
                    # The next round: past the minimum gap between polls, for every process.
                    write_clock_shift(shift_file, (round_ + 1) * (GAP_EPOCHS + 1) * EPOCH_DURATION)
                    await asyncio.sleep(1.2)  # every process re-reads the shift within a second
            finally:
                await run.issuer.close()
            assert set(kills) == set(VICTIMS), kills

            # Everything is back: every phone is served at once (none locked out), and polls once more.
            for i, phone in enumerate(phones):
                r = await _call("status", run, phone.status)
                for _ in range(60):  # the API may still be starting after the last kill
                    if r is not None and (r.status < 500):
                        break
                    await asyncio.sleep(0.5)
                    r = await _call("status", run, phone.status)
                assert r is not None and r.status == 200, f"phone {i}: {r}"
        assert not run.lockouts, run.lockouts

        uri = (tmp_path / "data" / "mongodb.uri").read_text().strip()
        client = AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000)
        db = client["robert"]
        for _ in range(240):
            if await _drained(db):
                break
            await asyncio.sleep(0.5)
        assert await _drained(db), "the matcher did not drain the contacts"
        parked = [d async for d in db["dead_letters"].find({}, {"contacts": 0})]
        assert not parked, [(d["attempts"], d["reason"]) for d in parked]

        pepper = (tmp_path / "data" / PEPPER_FILE).read_bytes().strip()
        accepted = [r for r in run.reports if r.accepted]
        assert accepted, "no report accepted"
        for rep in run.reports:  # one batch per report: its id tells whether it was applied
            assert len(phones[rep.reporter].contacts()) <= BATCH_SIZE
        batch_of = {_batch_id(pepper, r.code): r for r in run.reports}
        crypto = f"127.0.0.1:{ports['crypto']}"
        ids = [await _id_a(crypto, phone) for phone in phones]
        docs = {d["_id"]: d async for d in db["registrations"].find({"_id": {"$in": ids}})}
        applied_anywhere: set[str] = set()
        expected_hellos = expected_contacts = 0
        for t, target in enumerate(phones):
            doc = docs[ids[t]]
            applied = list(doc.get("applied_batches") or [])
            assert len(applied) == len(set(applied)), f"phone {t}: a batch applied twice"
            heard_by = {_batch_id(pepper, r.code) for r in run.reports if t in r.targets}
            must = {_batch_id(pepper, r.code) for r in accepted if t in r.targets}
            assert must <= set(applied), f"phone {t}: an accepted report was not matched"
            assert set(applied) <= heard_by, f"phone {t}: a batch that did not hear it was applied"
            applied_anywhere.update(applied)
            want: dict[str, float] = defaultdict(float)
            for b in applied:
                scores = _expected_scores(phones[batch_of[b].reporter], target)
                expected_contacts += len(scores)
                for epoch, score in scores.items():
                    want[epoch] += score
            expected_hellos += HELLOS_PER_TARGET * len(applied)
            got = doc.get("exposures") or {}
            assert set(got) == set(want), f"phone {t}: exposure epochs {sorted(got)} != {sorted(want)}"
            for epoch, score in want.items():
                assert got[epoch] == pytest.approx(score, rel=1e-9), f"phone {t} epoch {epoch}"

        kpis_now = await kpis.report(db)
        print(  # the figures of the run (pytest -s)
            f"chaos: kills {kills};",
            *(f"{kind} {dict(sorted(Counter(codes).items()))};" for kind, codes in run.answers.items()),
            f"reports {len(run.reports)}, accepted {len(accepted)}, stored {len(applied_anywhere)};",
            f"HELLOs {expected_hellos}, contacts {expected_contacts}; KPIs",
            {k: v for k, v in kpis_now.items() if v},
        )
        # KPIs: the matcher's exactly once (each batch's counts keyed by its id, added before it is
        # deleted); reports at most once (one whose API died between storing and counting, and whose
        # phone then gave up, is stored and not counted).
        totals = kpis_now
        stored = len(applied_anywhere)
        assert len(accepted) <= stored <= len(run.reports)
        assert 0 < totals["reports"] <= stored, totals
        assert totals["hellosScored"] == expected_hellos, (totals, expected_hellos)
        assert totals["contactsProcessed"] == expected_contacts, (totals, expected_contacts)
        assert totals["hellosProcessed"] == totals["hellosScored"], totals  # every HELLO was valid
    finally:
        if client is not None:
            await client.close()
        stop_up(up)
        print("robert up log:", log_path.read_text(errors="replace")[-4000:])  # shown if the test fails
    restarted = log_path.read_text(errors="replace").count('"component restarted"')
    assert restarted >= len(kills), log_path.read_text(errors="replace")[-3000:]


async def _id_a(crypto_address: str, phone: Phone) -> bytes:
    """A phone's id_A, which only the crypto service can tell: it authenticates a request of the phone
    (of a kind that changes nothing) and answers with the id_A its EBID decrypts to."""
    body = phone.auth_body(protocol.SALT_DELETE_HISTORY)
    request = crypto_pb2.AuthenticateRequestRequest(
        ebid=base64.b64decode(body["ebid"]), epoch_id=body["epochId"], time=base64.b64decode(body["time"]),
        mac=base64.b64decode(body["mac"]), request_type=crypto_pb2.DELETE_EXPOSURE_HISTORY,
    )  # fmt: skip
    async with grpc.aio.insecure_channel(crypto_address) as channel:
        answer = await crypto_pb2_grpc.CryptoServiceStub(channel).AuthenticateRequest(request, timeout=30)
    return bytes(answer.id_a)
