"""Matching end to end: one upload of 1 000 contacts x 100 HELLOs, with the embedded database.

Separate processes, as deployed: the database and the crypto service (``robert crypto``), started by
``simulator.system.LocalSystem``, and the matching worker(s) (this module run as
``python -m bench.bench_matching worker ...``, which waits for a start signal so that start-up is not
timed). Runs one worker, then two. Prints:

- HELLOs/s end to end (from the upload stored to the last batch deleted with its risks written);
- CPU microseconds per HELLO of the worker(s) and of the crypto service, apart from the database's own;
- where the worker's time goes (database round trips, the ValidateContacts gRPC call, scoring, risk), and
  the crypto service's pure computation for the same HELLOs measured in this process (the rest of the
  gRPC call is message encoding, transport, and the identities read).

Goals (issue 5): worker + crypto <= 5 us CPU per HELLO; >= 50 000 HELLOs/s end to end.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from crypto_backend.keystore import FileKeyStore
from simulator.system import LocalSystem

CONTACTS = 1_000
HELLOS = 100
COUNTRY = 0x21


# --- set-up ---------------------------------------------------------------------------------------


def _tls(env: dict[str, str]) -> Any:
    """Settings of the bench's clients: mutual TLS with the certificates of ROBERT_DATA_DIR/tls."""
    from robert_common.settings import load_settings

    return load_settings(
        use_running_embedded=False,
        data_dir=Path(env["ROBERT_DATA_DIR"]),
        crypto_address=env["ROBERT_CRYPTO_ADDRESS"],
    )


async def register_phones(env: dict[str, str], server_public: bytes, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` phones registered through the crypto service, with registration documents: (id_A, K_A,mac)."""
    from robert_common.clock import Clock, ServiceTime
    from robert_common.mongo import mongo_client
    from robert_server import registrations
    from robert_server.crypto_client import CryptoClient
    from simulator.phone import Phone

    st = ServiceTime(dt.date(2020, 6, 1), Clock())
    client = mongo_client(env["ROBERT_MONGODB_URI"])
    db = client[env["ROBERT_MONGODB_DATABASE"]]
    await registrations.ensure_indexes(db)
    out: list[tuple[bytes, bytes]] = []
    async with CryptoClient(env["ROBERT_CRYPTO_ADDRESS"], 10.0, settings=_tls(env)) as crypto:

        async def one() -> tuple[bytes, bytes]:
            phone = Phone(server_public_key=server_public)
            reg = await crypto.create_registration(phone.public_key_spki, st.current_epoch(), 1, COUNTRY)
            phone.derive_keys()
            await registrations.create(db, reg.id_a, st.current_epoch(), None)
            return reg.id_a, phone.k_mac or b""

        for start in range(0, n, 50):
            out += await asyncio.gather(*(one() for _ in range(min(50, n - start))))
    await client.close()
    return out


def build_contacts(phones: list[tuple[bytes, bytes]], store: Any) -> list[Any]:
    """One Contact per phone, 100 HELLOs over one epoch of yesterday, RSSIs between -75 and -40."""
    from crypto_backend import protocol
    from robert_common.clock import Clock, ServiceTime
    from robert_server.contacts import Contact, Hello

    st = ServiceTime(dt.date(2020, 6, 1), Clock())
    rng = random.Random(5)
    base_epoch = st.current_epoch() - 96
    k_g = store.federation_key()
    out = []
    for i, (id_a, k_mac) in enumerate(phones):
        epoch = base_epoch + i % 8
        ebid = protocol.encrypt_ebid(store.day_key(st.day_of_epoch(epoch)), epoch, id_a)
        ecc = protocol.encrypt_country_code(k_g, ebid, COUNTRY)
        t0 = st.epoch_start(epoch) + rng.randrange(0, 30)
        hellos = []
        for k in range(HELLOS):
            t = t0 + k * 9
            hellos.append(
                Hello(t, t & 0xFFFF, protocol.hello_mac(k_mac, ecc, ebid, t & 0xFFFF), rng.randint(-75, -40))
            )
        out.append(Contact(ebid, ecc, hellos))
    return out


def crypto_compute_estimate(contacts: list[Any], phones: list[tuple[bytes, bytes]], store: Any) -> float:
    """Seconds of the crypto service's pure computation (steps 1 to 4) for these contacts, in this process."""
    from crypto_backend import validation
    from robert_common.clock import date_to_ntp
    from robert_common.rpc import crypto_pb2 as pb

    start = dt.date(2020, 6, 1)
    request = [
        pb.Contact(
            ebid=c.ebid,
            ecc=c.ecc,
            time_collected=b"".join(h.time_collected.to_bytes(4, "big") for h in c.hellos),
            time_from_hello=b"".join(h.time_from_hello.to_bytes(2, "big") for h in c.hellos),
            macs=b"".join(h.mac for h in c.hellos),
        )
        for c in contacts
    ]
    k_macs = dict(phones)
    t = time.process_time()
    for i in range(0, len(request), 100):
        part = request[i : i + 100]
        d = validation.decrypt_contacts(
            part,
            k_g=store.federation_key(),
            day_key=lambda day: store.day_key(start + dt.timedelta(days=day)),
            time_start_ntp=date_to_ntp(start),
            server_cc=COUNTRY,
            tolerance=180,
        )
        validation.check_hellos(d, part, {a: k_macs[a] for a in d.id_as()})
    return time.process_time() - t


# --- one timed run --------------------------------------------------------------------------------


async def reset_and_upload(env: dict[str, str], contacts: list[Any], report_id: str) -> float:
    """Fresh risk fields for every registration (not timed), then store the upload (timed, returned)."""
    from robert_common.mongo import mongo_client
    from robert_server import contacts as contacts_db
    from robert_server import registrations

    client = mongo_client(env["ROBERT_MONGODB_URI"])
    db = client[env["ROBERT_MONGODB_DATABASE"]]
    fresh = {
        "exposures": {},
        "applied_batches": [],
        "risk_pending": False,
        "at_risk": False,
        "latest_risk_epoch": 0,
    }
    await registrations.collection(db).update_many({}, {"$set": fresh})
    await contacts_db.ensure_indexes(db)
    t = time.perf_counter()
    await contacts_db.store_report(db, report_id, contacts, dt.datetime.now(dt.UTC))
    elapsed = time.perf_counter() - t
    await client.close()
    return elapsed


async def summary(env: dict[str, str]) -> dict[str, int]:
    from robert_common.mongo import mongo_client
    from robert_server import contacts as contacts_db
    from robert_server import registrations

    client = mongo_client(env["ROBERT_MONGODB_URI"])
    db = client[env["ROBERT_MONGODB_DATABASE"]]
    out = {
        "batches_left": await contacts_db.pending_batches(db),
        "at_risk": await registrations.count_at_risk(db),
        "pending": await registrations.collection(db).count_documents({"risk_pending": True}),
    }
    await client.close()
    return out


def timed_run(system: LocalSystem, n_workers: int, contacts: list[Any]) -> dict:
    env, workdir = system.env, system.dir
    go = workdir / f"go-{n_workers}"
    procs = []
    for w in range(n_workers):
        ready = workdir / f"ready-{n_workers}-{w}"
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, "-m", "bench.bench_matching", "worker", str(go), str(ready)],
                    env=env,
                    stdout=subprocess.PIPE,
                ),
                ready,
            )
        )
    while not all(r.exists() for _, r in procs):
        time.sleep(0.05)
    upload = asyncio.run(reset_and_upload(env, contacts, f"bench-{n_workers}-{time.time_ns()}"))
    cpu0 = system.cpu_seconds()
    started = time.time()
    go.write_text("go")
    outputs = []
    for p, _ in procs:
        out, _ = p.communicate(timeout=600)
        outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
    finished = max(o["finished_at"] for o in outputs)
    cpu = {name: seconds - cpu0[name] for name, seconds in system.cpu_seconds().items() if name in cpu0}
    return {
        "upload": upload,
        "wall": finished - started,
        "cpu": cpu,
        "workers": outputs,
        **asyncio.run(summary(env)),
    }


def report(title: str, r: dict, hellos: int, crypto_compute: float) -> None:
    worker_cpu = sum(o["cpu"] for o in r["workers"])
    timings: dict[str, float] = {}
    for o in r["workers"]:
        for k, v in o["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
    wall = r["wall"]
    batches = sum(o["batches"] for o in r["workers"])
    print(f"\n{title}: {hellos} HELLOs, {CONTACTS} contacts, batches done: {batches}")
    print(f"  upload stored (store_report, {CONTACTS} contacts): {r['upload'] * 1000:8.1f} ms")
    print(f"  matching wall time:      {wall:8.3f} s  -> {hellos / wall:10.0f} HELLOs/s end to end")
    up_wall = wall + r["upload"]
    print(f"  incl. storing the upload {up_wall:8.3f} s  -> {hellos / up_wall:10.0f} HELLOs/s")
    print(f"  CPU worker(s):  {worker_cpu:7.3f} s = {worker_cpu / hellos * 1e6:6.2f} us/HELLO")
    print(
        f"  CPU crypto:     {r['cpu']['crypto']:7.3f} s = {r['cpu']['crypto'] / hellos * 1e6:6.2f} us/HELLO"
    )
    total = worker_cpu + r["cpu"]["crypto"]
    print(f"  worker+crypto:  {total:7.3f} s = {total / hellos * 1e6:6.2f} us/HELLO  (goal <= 5)")
    if "database" in r["cpu"]:
        db = r["cpu"]["database"]
        print(f"  CPU database:   {db:7.3f} s = {db / hellos * 1e6:6.2f} us/HELLO (apart)")
    print("  worker time by phase (wall, summed over workers):")
    for k in ("db", "grpc", "scoring", "risk"):
        v = timings.get(k, 0.0)
        print(f"    {k:8s} {v:7.3f} s  {v / hellos * 1e6:6.2f} us/HELLO")
    print(f"    of grpc, crypto computation (steps 1-4, measured in-process): {crypto_compute:7.3f} s")
    print(f"  result: at risk {r['at_risk']}, risk pending {r['pending']}, batches left {r['batches_left']}")


def main() -> None:
    # yesterday's contacts need yesterday's day keys: keys from 3 days ago, as a week of use would have
    with LocalSystem(("crypto",), env={"ROBERT_TIME_START": "20200601"}, past_key_days=3) as system:
        env = system.env
        store = FileKeyStore.load(
            Path(env["ROBERT_KEYSTORE_PATH"]), env["ROBERT_KEYSTORE_PASSPHRASE"].encode()
        )
        server_public = system.server_public_key()
        t = time.perf_counter()
        phones = asyncio.run(register_phones(env, server_public, CONTACTS))
        print(f"set-up: {len(phones)} phones registered in {time.perf_counter() - t:.1f} s")
        contacts = build_contacts(phones, store)
        hellos = CONTACTS * HELLOS
        compute = crypto_compute_estimate(contacts, phones, store)
        print(f"crypto computation alone (in-process): {compute / hellos * 1e6:.2f} us/HELLO")
        asyncio.run(_daily_done(env))
        for n in (1, 2):
            r = timed_run(system, n, contacts)
            report(f"{n} worker{'s' if n > 1 else ''}", r, hellos, compute)


async def _daily_done(env: dict[str, str]) -> None:
    """Run today's daily job now (nothing to purge yet), so that the timed passes do not."""
    from robert_common.clock import Clock, ServiceTime
    from robert_common.mongo import mongo_client
    from robert_server.crypto_client import CryptoClient
    from robert_server.matching.worker import Worker

    client = mongo_client(env["ROBERT_MONGODB_URI"])
    async with CryptoClient(env["ROBERT_CRYPTO_ADDRESS"], settings=_tls(env), identity="matcher") as crypto:
        w = Worker(client[env["ROBERT_MONGODB_DATABASE"]], crypto, ServiceTime(dt.date(2020, 6, 1), Clock()))
        await w.daily_maintenance()
    await client.close()


# --- the worker process ---------------------------------------------------------------------------


async def _worker(go: Path, ready: Path) -> dict[str, Any]:
    from robert_common.clock import Clock, ServiceTime
    from robert_common.mongo import mongo_client
    from robert_common.settings import load_settings
    from robert_server.crypto_client import CryptoClient
    from robert_server.matching.worker import MatchingConfig, Worker

    settings = load_settings()
    assert settings.mongodb_uri is not None
    client = mongo_client(settings.mongodb_uri)
    db = client[settings.mongodb_database]
    await db.command("ping")
    async with CryptoClient.from_settings(settings, "matcher") as crypto:
        await crypto.registration_public_key()  # connected
        worker = Worker(
            db, crypto, ServiceTime(settings.time_start_date, Clock()), MatchingConfig.from_settings(settings)
        )
        ready.write_text("ready")  # noqa: ASYNC240 - a start signal between processes, before timing
        while not go.exists():  # noqa: ASYNC240, ASYNC110
            await asyncio.sleep(0.002)
        cpu = time.process_time()
        stats = await worker.run_once()
        out = {
            "finished_at": time.time(),
            "cpu": time.process_time() - cpu,
            "batches": stats.batches,
            "timings": dict(stats.timings),
            "counters": dict(stats.counters),
        }
    await client.close()
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        print(json.dumps(asyncio.run(_worker(Path(sys.argv[2]), Path(sys.argv[3])))))
    else:
        main()
