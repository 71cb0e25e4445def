"""``python -m bench status``: /status calls per second and CPU milliseconds per call (API + crypto).

Runs the system as it is deployed, one process per role (``simulator.system.LocalSystem``): the
database, ``robert crypto`` and ``robert api`` as separate processes, this process as the phones'
client. Registers phones, then keeps ``CONCURRENCY`` status polls in flight for ``DURATION`` seconds
(minimum gap disabled so a phone may poll again at once; the conditional registration update still
runs) and reads the CPU time of each server process before and after. Goal: at most 1 ms of CPU per
status call across the API and crypto processes. The database process's CPU is printed for
information (SecantusDB is pure Python and is not what production runs).

Environment: BENCH_PHONES (default 200), BENCH_DURATION seconds (10), BENCH_CONCURRENCY (32).
Options: ``--api-processes N`` and ``--crypto-processes N`` (default 1 each) start N processes of each, as
``robert up`` does with ROBERT_API_PROCESSES / ROBERT_CRYPTO_PROCESSES; the CPU is then summed per kind
(and printed per process). The client keeps one connection per poll in flight, so the kernel spreads them
over the API processes.

``--floor``: instead, the same load against an aiohttp server that does nothing but read the request and
answer a fixed body of a /status answer's size: the HTTP layer's own CPU per call, the part of the API's
that no change to ROBERT's code removes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import aiohttp

from robert_common.clock import Clock
from robert_common.mongo import free_port
from simulator.phone import Phone
from simulator.system import LocalSystem, cpu_seconds

PHONES = int(os.environ.get("BENCH_PHONES", "200"))
DURATION = float(os.environ.get("BENCH_DURATION", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))


async def drive(system: LocalSystem) -> None:
    base_url, server_key = system.base_url, system.server_public_key()
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:
        phones = [Phone(base_url, server_key, clock=Clock(), http=http) for _ in range(PHONES)]
        started = time.perf_counter()
        for i in range(0, PHONES, CONCURRENCY):
            results = await asyncio.gather(*(p.register() for p in phones[i : i + CONCURRENCY]))
            assert all(r.status == 201 for r in results), [r.status for r in results][:5]
        reg_s = time.perf_counter() - started
        print(f"registered {PHONES} phones in {reg_s:.1f} s ({PHONES / reg_s:.0f}/s)")

        for p in phones[:CONCURRENCY]:  # warm-up
            assert (await p.status()).status == 200
        count = 0
        errors = 0
        stop_at = time.perf_counter() + DURATION

        async def worker(k: int) -> None:
            nonlocal count, errors
            i = k
            while time.perf_counter() < stop_at:
                r = await phones[i % PHONES].status()
                if r.status == 200:
                    count += 1
                else:
                    errors += 1
                i += CONCURRENCY

        before = system.cpu_seconds()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
        after = system.cpu_seconds()

    per_process = {name: 1000 * (after[name] - before[name]) / max(count, 1) for name in after}
    cpu_ms: dict[str, float] = {}
    for name, ms in per_process.items():
        kind = name.split(".")[0]
        cpu_ms[kind] = cpu_ms.get(kind, 0.0) + ms
    print(f"status calls: {count} in {elapsed:.1f} s, {errors} errors, concurrency {CONCURRENCY}")
    print(f"status calls per second: {count / elapsed:.0f}")
    print(f"CPU ms per status call: api {cpu_ms['api']:.2f}, crypto {cpu_ms['crypto']:.2f}, "
          f"api+crypto {cpu_ms['api'] + cpu_ms['crypto']:.2f} (goal <= 1.00)")  # fmt: skip
    if len(per_process) > len(cpu_ms):
        print("  per process: " + ", ".join(f"{n} {ms:.2f}" for n, ms in sorted(per_process.items())))
    if "database" in cpu_ms:
        print(f"  (database process, for information: {cpu_ms['database']:.2f} ms per call)")


# A /status answer's size: the 23 KB of base64 tuples, an empty config, a token.
FLOOR_SERVER = """
import sys
from aiohttp import web
body = b'{"riskLevel":0,"tuples":"' + b"A" * 23068 + b'","config":[],"analyticsToken":"' + b"x" * 290 + b'"}'
async def status(request):
    await request.read()
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_post("/api/v6/status", status)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def drive_floor(url: str, pid: int) -> None:
    request = b'{"ebid":"' + b"A" * 12 + b'","epochId":1,"time":"AAAAAA==","mac":"' + b"A" * 44 + b'"}'
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
        count = 0
        stop_at = time.perf_counter() + DURATION

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < stop_at:
                async with http.post(url, data=request, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    count += r.status == 200

        before, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - before
    print(f"HTTP floor (aiohttp, no-op handler, same answer size): {count / elapsed:.0f} calls/s, "
          f"CPU ms per call {1000 * cpu / max(count, 1):.2f}")  # fmt: skip


def floor() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", FLOOR_SERVER, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the floor server did not start") from None
                time.sleep(0.1)
        asyncio.run(drive_floor(f"http://127.0.0.1:{port}/api/v6/status", server.pid))
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench status")
    parser.add_argument("--api-processes", type=int, default=1, help="API processes sharing the port")
    parser.add_argument("--crypto-processes", type=int, default=1, help="crypto service processes")
    parser.add_argument("--floor", action="store_true", help="measure the HTTP layer alone (no ROBERT)")
    args, _ = parser.parse_known_args()  # the other arguments name the benchmarks (bench/__main__.py)
    if args.floor:
        floor()
        return
    counts = {"api": args.api_processes, "crypto": args.crypto_processes}
    print(f"processes: {counts['api']} API, {counts['crypto']} crypto")
    # BENCH_PROFILE_API=<file>: write a cProfile of the API process there (wall-clock timer).
    profile = os.environ.get("BENCH_PROFILE_API", "")
    options = {"api": ["-m", "cProfile", "-o", profile]} if profile else {}
    env = {"ROBERT_STATUS_MIN_EPOCH_GAP": "0"}
    with LocalSystem(("crypto", "api"), env=env, python_options=options, processes=counts) as system:
        try:
            asyncio.run(drive(system))
        except Exception:
            for name in system.processes:
                print(f"--- {name}.log ---\n" + system.log(name), file=sys.stderr)
            raise


if __name__ == "__main__":
    main()
