"""``python -m bench scale``: the system at 10 k, 100 k (and, on demand, 1 M) registrations (issue 12).

The system runs as deployed, one process per role, started by :class:`simulator.system.LocalSystem`
(SecantusDB standalone, ``robert crypto``, ``robert api``; no matcher: it is run once per level,
timed). At each level the database is first filled by ``robert seed`` (bulk sealed identities and
registrations), then measured:

- /register: 1 000 phones registered through the API (32 in flight), the rate of the first thousand (empty
  database) and of the thousand at this level: their ratio shows decay;
- /status: ``CONCURRENCY`` polls in flight for ``STATUS_SECONDS`` over the API-registered phones (minimum
  gap off), calls/s, p50 and p99 latency, and CPU ms per call of the database, API and crypto processes;
- matching: ``REPORTS`` uploads of 1 000 contacts x 100 HELLOs (a national day scaled down; PROTOCOL.md
  plans ~500 such reports a day) stored as /report stores them, then ``robert matcher --once`` timed, with
  the CPU of the worker, the crypto service and the database each.

Before the levels, database round trips per operation are counted with a command listener
(:class:`robert_common.mongo.CommandRecorder`) on a client shared by the real API app, crypto service,
code verifier and worker run in this process: /register (and its captcha), /status (one by one and
32 at once), /report, and per matched HELLO.

Usage: ``python -m bench.bench_scale [LEVEL ...] [--no-trips]`` (default levels 10000 100000; seeding
1 M registrations takes about a quarter of an hour here: run ``1000000`` in the background).
The first ``robert matcher --once`` of each level runs the daily job (the matcher's once-a-day walk of
every registration by ``_id`` pages): its time, less an empty pass's, is printed apart.

Environment: BENCH_STATUS_SECONDS (20), BENCH_CONCURRENCY (32), BENCH_REPORTS (10); ROBERT_MONGODB_URI
with ROBERT_MONGODB_DATABASE and ROBERT_CRYPTO_MONGODB_DATABASE: go on from an existing database
(BENCH_DATABASE_PID: its server's process, for its CPU). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from robert_common import tls
from simulator.system import LocalSystem, cpu_seconds

STATUS_SECONDS = float(os.environ.get("BENCH_STATUS_SECONDS", "20"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
REPORTS = int(os.environ.get("BENCH_REPORTS", "10"))
PHONES_PER_LEVEL = 1_000
DAILY_PAGE = int(os.environ.get("ROBERT_MATCHER_DAILY_PAGE", "1000"))  # the matcher's own setting
CONTACTS, HELLOS = 1_000, 100
PEPPER = "bench-pepper-0123456789abcdef0123"
PASSPHRASE = "bench passphrase"  # noqa: S105 - a throw-away key store


# --- the system: simulator.system.LocalSystem (one process per component) ---------------------------


def start_system() -> LocalSystem:
    env = {"ROBERT_STATUS_MIN_EPOCH_GAP": "0", "ROBERT_CODES_PEPPER": PEPPER}
    # An existing database (ROBERT_MONGODB_URI and both database names set): measure at its size without
    # seeding it again. Its identities may be sealed under another key store: only the size matters.
    for name in ("ROBERT_MONGODB_DATABASE", "ROBERT_CRYPTO_MONGODB_DATABASE"):
        if os.environ.get("ROBERT_MONGODB_URI") and os.environ.get(name):
            env[name] = os.environ[name]
    return LocalSystem(("crypto", "api"), env=env, ready_timeout=300.0)


def cpu(system: LocalSystem) -> dict[str, float]:
    """CPU seconds so far of each process; an existing database's server is BENCH_DATABASE_PID."""
    out = system.cpu_seconds()
    if "database" not in out:
        out["database"] = cpu_seconds(int(os.environ["BENCH_DATABASE_PID"]))
    return out


def database_name(system: LocalSystem) -> str:
    return system.env["ROBERT_MONGODB_DATABASE"]


def run_timed(system: LocalSystem, *args: str) -> tuple[str, float, float]:
    """``robert ARGS`` as a child: (stdout, wall seconds, its CPU seconds from wait4)."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "robert_server.cli", *args],
            env=system.env,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(
                f"robert {' '.join(args)} exited with {proc.returncode}: {err.read().decode()[-2000:]}"
            )
    return out.decode(), time.perf_counter() - started, usage.ru_utime + usage.ru_stime


async def count_registrations(system: LocalSystem) -> int:
    from robert_common.mongo import mongo_client

    client = mongo_client(system.mongodb_uri, timeout_ms=60_000)
    try:
        return await client[database_name(system)]["registrations"].estimated_document_count()
    finally:
        await client.close()


# --- phones ----------------------------------------------------------------------------------------


async def register(system: LocalSystem, key: bytes, n: int) -> tuple[list[Any], float, dict[str, float]]:
    """``n`` phones registered through /register, ``CONCURRENCY`` at once: (phones, registrations/s, CPU
    ms per registration of each process)."""
    from robert_common.clock import Clock
    from simulator.phone import Phone

    clock = Clock()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
        phones = [Phone(system.base_url, key, clock=clock, http=http) for _ in range(n)]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(p: Any) -> None:
            async with gate:
                r = await p.register()
                if r.status != 201:
                    raise RuntimeError(f"/register answered {r.status}: {r.body}")

        cpu0 = cpu(system)
        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in phones))
        elapsed = time.perf_counter() - started
        cpu1 = cpu(system)
        for p in phones:
            p.http = None
    return phones, n / elapsed, {name: 1000 * (cpu1[name] - cpu0[name]) / n for name in cpu0}


async def poll(system: LocalSystem, phones: list[Any]) -> dict[str, float]:
    """/status at CONCURRENCY in flight for STATUS_SECONDS: calls/s, p50, p99 (ms), CPU ms per call."""
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
        for p in phones:
            p.http = http
        stop = time.perf_counter() + STATUS_SECONDS
        cpu0 = cpu(system)

        async def loop(k: int) -> None:
            nonlocal errors
            mine = phones[k::CONCURRENCY]  # never two polls of one phone at once
            rng = random.Random(k)
            while time.perf_counter() < stop:
                p = mine[rng.randrange(len(mine))]
                t = time.perf_counter()
                r = await p.status()
                latencies.append(time.perf_counter() - t)
                errors += r.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        cpu1 = cpu(system)
        for p in phones:
            p.http = None
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100)
    out = {
        "calls": n,
        "errors": errors,
        "per_second": n / elapsed,
        "p50_ms": 1000 * q[49],
        "p99_ms": 1000 * q[98],
    }
    for name in cpu0:
        out[f"{name}_cpu_ms"] = 1000 * (cpu1[name] - cpu0[name]) / max(n, 1)
    return out


def build_reports(phones: list[Any], reports: int) -> list[list[Any]]:
    """``reports`` uploads of CONTACTS contacts x HELLOS HELLOs, each contact one API-registered phone
    heard for 15 minutes of the current epoch (valid MACs: they are all scored)."""
    from crypto_backend import protocol
    from robert_server.contacts import Contact, Hello

    rng = random.Random(7)
    out = []
    for _ in range(reports):
        contacts = []
        for p in rng.sample(phones, min(CONTACTS, len(phones))):
            epoch, ebid, ecc = p.key_of()
            t0 = p.time_start + epoch * 900
            hellos = []
            for k in range(HELLOS):
                t = t0 + k * 9
                mac = protocol.hello_mac(p.k_mac, ecc, ebid, t & 0xFFFF)
                hellos.append(Hello(t, t & 0xFFFF, mac, rng.randint(-75, -40)))
            contacts.append(Contact(ebid, ecc, hellos))
        out.append(contacts)
    return out


async def store_reports(system: LocalSystem, reports: list[list[Any]]) -> None:
    from robert_common.mongo import mongo_client
    from robert_server import contacts

    client = mongo_client(system.mongodb_uri, timeout_ms=60_000)
    try:
        db = client[database_name(system)]
        await contacts.ensure_indexes(db)
        for items in reports:
            await contacts.store_report(db, uuid.uuid4().hex, items, dt.datetime.now(dt.UTC))
    finally:
        await client.close()


async def daily_job_due(system: LocalSystem) -> None:
    """Make the matcher's daily job due again (it runs once a day: each level measures it)."""
    from robert_common.mongo import mongo_client
    from robert_server.matching import state

    client = mongo_client(system.mongodb_uri, timeout_ms=60_000)
    try:
        await state.collection(client[database_name(system)]).update_one(
            {"_id": state.DAILY}, {"$set": {"done_day": None, "lease_until": state.UNCLAIMED}}
        )
    finally:
        await client.close()


def match(system: LocalSystem, phones: list[Any]) -> dict[str, float]:
    asyncio.run(daily_job_due(system))
    before = cpu(system)
    _, daily, daily_cpu = run_timed(system, "matcher", "--once")  # with the daily job: timed apart
    after = cpu(system)
    _, empty_wall, empty_cpu = run_timed(system, "matcher", "--once")  # process start, connections
    reports = build_reports(phones, REPORTS)
    asyncio.run(store_reports(system, reports))
    hellos = sum(len(c.hellos) for r in reports for c in r)
    cpu0 = cpu(system)
    out, wall, worker_cpu = run_timed(system, "matcher", "--once")
    cpu1 = cpu(system)
    wall, worker_cpu = wall - empty_wall, worker_cpu - empty_cpu
    stats = json.loads(out.strip().splitlines()[-1])
    return {
        "hellos": hellos,
        "scored": stats.get("hellosScored", 0),
        "seconds": wall,
        "hellos_per_second": hellos / wall,
        "worker_us": 1e6 * worker_cpu / hellos,
        "crypto_us": 1e6 * (cpu1["crypto"] - cpu0["crypto"]) / hellos,
        "database_us": 1e6 * (cpu1["database"] - cpu0["database"]) / hellos,
        "empty_seconds": empty_wall,
        "empty_cpu": empty_cpu,
        "daily_seconds": daily - empty_wall,
        "daily_worker_cpu": daily_cpu - empty_cpu,
        "daily_database_cpu": after["database"] - before["database"],
    }


# --- round trips per operation (in this process, with a command listener) -------------------------


async def round_trips(uri: str, data: Path) -> tuple[dict[str, float], Counter[str]]:
    """Database commands per operation, counted on the client every component of this process uses, and
    the commands of one matching pass by kind and collection."""
    from crypto_backend.keystore import FileKeyStore
    from crypto_backend.service import CryptoServer
    from robert_common.clock import Clock, ServiceTime
    from robert_common.mongo import CommandRecorder, mongo_client
    from robert_common.settings import load_settings
    from robert_server import contacts, registrations
    from robert_server.api.app import create_app
    from robert_server.captcha import BuiltinCaptcha
    from robert_server.codes import make_verifier
    from robert_server.codes.service import CodeService
    from robert_server.crypto_client import CryptoClient
    from robert_server.matching.worker import MatchingConfig, Worker
    from simulator.phone import Phone

    recorder = CommandRecorder()
    client = mongo_client(uri, listeners=[recorder])
    db = client[f"trips_{uuid.uuid4().hex[:8]}"]
    clock = Clock()
    settings = load_settings(
        data_dir=data, mongodb_uri=uri, mongodb_database=db.name, crypto_mongodb_database=db.name,
        keystore_path=data / "keystore.json", keystore_passphrase=PASSPHRASE, crypto_listen="127.0.0.1:0",
        captcha="off", status_min_epoch_gap=0, codes_pepper=PEPPER, http_host="127.0.0.1", http_port=0,
    )  # fmt: skip
    store = FileKeyStore.create(data / "keystore.json", PASSPHRASE.encode(), scrypt_n=2**10)
    store.rotate(clock.utcnow().date() - dt.timedelta(days=1), 8, 10_000)
    tls.ensure_dev_certs(data / "tls")  # mutual TLS, as deployed
    server = CryptoServer(settings, clock, store, db)
    address = await server.start()
    crypto = CryptoClient(address, 30.0, settings=settings, identity="api")
    matcher_crypto = CryptoClient(address, 30.0, settings=settings, identity="matcher")
    from aiohttp import web

    app = create_app(settings, clock=clock, db=db, crypto=crypto, verifier=make_verifier(db, settings, clock))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    out: dict[str, float] = {}
    detail: Counter[str] = Counter()

    def counted(ops: int) -> float:
        commands = recorder.take()
        return len(commands) / ops

    def by_collection() -> Counter[str]:
        return Counter(f"{name} {coll}" for name, coll, _ in recorder.commands)

    try:
        await registrations.ensure_indexes(db)
        await contacts.ensure_indexes(db)
        key = store.registration_public_key()
        captcha = BuiltinCaptcha(db, clock)
        recorder.active = True
        for _ in range(10):
            cid = await captcha.create("IMAGE", "fr", answer="ABCDEF")
            await captcha.media(cid, "image")
            await captcha.verify(cid, "ABCDEF")
        out["captcha (create, image, verify)"] = counted(10)
        async with aiohttp.ClientSession() as http:
            phones = [Phone(base, key, clock=clock, http=http) for _ in range(200)]
            for p in phones[:50]:
                r = await p.register()
                assert r.status == 201, r.body
            out["/register (without its captcha)"] = counted(50)
            for k in range(50, len(phones), 32):  # under the API's admission limit (api_max_in_progress)
                answers = await asyncio.gather(*(p.register() for p in phones[k : k + 32]))
                assert all(a.status == 201 for a in answers), [a.body for a in answers if a.status != 201]
            recorder.take()
            for p in phones[:50]:
                await p.status()
            out["/status, one at a time"] = counted(50)
            for _ in range(5):
                await asyncio.gather(*(p.status() for p in phones[:32]))
            out["/status, 32 at once (micro-batched)"] = counted(5 * 32)
            code = (await CodeService(db, settings, clock).issue_short("bench")).code
            reporter = phones[0]
            for p in phones[1:101]:
                epoch = p.key_of()[0]
                for k in range(20):  # HELLOs of the current epoch (the one the bundle starts with)
                    reporter.hear(p.hello(p.epoch_start(epoch) + k * 30), rssi=-50)
            recorder.take()
            r = await reporter.report(code)
            assert r.status == 200, r.body
            out["/report (100 contacts)"] = counted(1)
        worker = Worker(db, matcher_crypto, ServiceTime(settings.time_start_date, clock), MatchingConfig())
        await worker.run_once()  # the daily job (once a day), not counted
        await store_many_contacts(db, phones[1:], 1_000, 100)
        recorder.take()
        stats = await worker.run_once()
        hellos = stats.counters.get("hellosProcessed", 0)
        detail = by_collection()
        out[f"matching, per HELLO ({hellos} HELLOs; per batch of 100 contacts x 100: x 10 000)"] = counted(
            max(hellos, 1)
        )
    finally:
        recorder.active = False
        await runner.cleanup()
        await crypto.close()
        await matcher_crypto.close()
        await server.stop(None)
        await client.drop_database(db.name)
        await client.close()
    return out, detail


async def store_many_contacts(db: Any, phones: list[Any], contacts_n: int, hellos_n: int) -> None:
    """One upload of ``contacts_n`` contacts x ``hellos_n`` HELLOs over these phones (valid MACs)."""
    from crypto_backend import protocol
    from robert_server import contacts
    from robert_server.contacts import Contact, Hello

    items = []
    for k in range(contacts_n):
        p = phones[k % len(phones)]
        epoch, ebid, ecc = p.key_of()
        t0 = p.time_start + epoch * 900
        hellos = [
            Hello(
                t0 + i * 9,
                (t0 + i * 9) & 0xFFFF,
                protocol.hello_mac(p.k_mac, ecc, ebid, (t0 + i * 9) & 0xFFFF),
                -50,
            )
            for i in range(hellos_n)
        ]  # noqa: E501
        items.append(Contact(ebid, ecc, hellos))
    await contacts.store_report(db, uuid.uuid4().hex, items, dt.datetime.now(dt.UTC))


# --- main ------------------------------------------------------------------------------------------


def _cpu(ms: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms[name]:.2f}" for name in ("database", "api", "crypto"))


def level(system: LocalSystem, key: bytes, target: int, phones: list[Any], first_rate: float) -> None:
    have = asyncio.run(count_registrations(system))
    missing = target - have - PHONES_PER_LEVEL
    if missing > 0:
        out, wall, _ = run_timed(system, "seed", "--registrations", str(missing))
        print(f"  seeded {missing} registrations in {wall:.0f} s ({missing / wall:.0f}/s): {out.strip()}")
    new, rate, cpu_ms = asyncio.run(register(system, key, PHONES_PER_LEVEL))
    phones += new
    total = asyncio.run(count_registrations(system))
    print(f"  registrations: {total}")
    print(f"  /register: {rate:.0f}/s for the thousand at this level; first thousand {first_rate:.0f}/s "
          f"(ratio {rate / first_rate:.2f}); CPU ms per registration: {_cpu(cpu_ms)}")  # fmt: skip
    s = asyncio.run(poll(system, phones))
    cpu = ", ".join(f"{name} {s[f'{name}_cpu_ms']:.2f}" for name in ("database", "api", "crypto"))
    print(f"  /status: {s['per_second']:.0f}/s at {CONCURRENCY} in flight, p50 {s['p50_ms']:.0f} ms, "
          f"p99 {s['p99_ms']:.0f} ms, {s['errors']} errors; CPU ms per call: {cpu}")  # fmt: skip
    m = match(system, phones)
    cpu = ", ".join(f"{name} {m[f'{name}_us']:.2f}" for name in ("worker", "crypto", "database"))
    print(f"  matching {REPORTS} reports x {CONTACTS} contacts x {HELLOS} HELLOs ({m['hellos']} HELLOs, "
          f"{m['scored']} scored): {m['seconds']:.1f} s, {m['hellos_per_second']:.0f} HELLOs/s; "
          f"CPU us per HELLO: {cpu}")  # fmt: skip
    print(f"  (an empty matching pass: {m['empty_seconds']:.1f} s, {m['empty_cpu']:.2f} s CPU, subtracted)")
    print(f"  daily job over {total} registrations ({DAILY_PAGE} a page): {m['daily_seconds']:.1f} s; CPU s: "
          f"worker {m['daily_worker_cpu']:.2f}, database {m['daily_database_cpu']:.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench scale")
    parser.add_argument("levels", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--no-trips", action="store_true", help="skip the round-trip count")
    args = parser.parse_args(sys.argv[1:] if argv is None and __name__ == "__main__" else argv or [])
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, start_system() as system:
        if not args.no_trips:
            print("database commands per operation (command listener):")
            trips, detail = asyncio.run(round_trips(system.mongodb_uri, Path(tmp)))
            for name, value in trips.items():
                print(f"  {name}: {value:.4g}")
            print(f"  matching commands by kind: {dict(detail)}")
        key = system.server_public_key()
        have = asyncio.run(count_registrations(system))
        phones, first, cpu_ms = asyncio.run(register(system, key, PHONES_PER_LEVEL))
        print(
            f"first thousand /register (at {have} registrations): {first:.0f}/s; CPU ms each: {_cpu(cpu_ms)}"
        )
        for target in args.levels:
            print(f"level {target}:")
            level(system, key, target, phones, first)


if __name__ == "__main__":
    main()
