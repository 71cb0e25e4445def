"""One measured load run: start a local system, fill it, run a Locust profile, print the figures.

    .venv/bin/python loadtests/bench_load.py national --users 40 --run-time 60s --preregister 10000

Prints, as Markdown for BENCHMARKS.md: registrations/s while pre-registering, then per request type
the count, failures, throughput and latency percentiles from Locust, and the server's CPU time per
request (all server processes: API, crypto, codes, matcher, database; started and measured by
``simulator.system.LocalSystem``).
Locust runs on the same machine and its own CPU is printed too: on 2 cores it competes with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator.system import LocalSystem, cpu_seconds  # noqa: E402

# what load runs need of the system: phones may poll at once (the default gap is 2 epochs)
SYSTEM_ENV = {"ROBERT_STATUS_MIN_EPOCH_GAP": "0"}

PROFILES = {
    # name: (user classes, weights poll,register,report)
    "national": (["PollingPhone", "RegisteringPhone", "ReportingPhone"], "95,4,1"),
    "polling": (["PollingPhone"], "1,0,0"),
    "registration": (["RegisteringPhone"], "0,1,0"),
    "reporting": (["ReportingPhone"], "0,0,1"),
}


async def preregister(system: LocalSystem, key: bytes, count: int, concurrency: int = 8) -> float:
    """Register ``count`` phones through the API; returns registrations per second."""
    from simulator.phone import Phone

    if count <= 0:
        return 0.0
    done = 0
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:

        async def worker(n: int) -> None:
            nonlocal done
            for _ in range(n):
                r = await Phone(system.base_url, key, http=http).register()
                if r.status != 201:
                    raise RuntimeError(f"pre-registration refused: HTTP {r.status}")
                done += 1
                if done % 1000 == 0:
                    print(f"  {done} registered, {done / (time.monotonic() - t0):.0f}/s", file=sys.stderr)

        share = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(worker(n) for n in share))
    return count / (time.monotonic() - t0)


def run_locust(
    system: LocalSystem, profile: str, users: int, run_time: str, poll_gap: float, env: dict
) -> Path:
    classes, weights = PROFILES[profile]
    prefix = system.dir / f"locust-{profile}"
    env = {
        **system.env, **env, "ROBERT_LOAD_WEIGHTS": weights, "ROBERT_LOAD_POLL_GAP": str(poll_gap),
        "ROBERT_LOAD_SPREAD": "1",
    }  # fmt: skip
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "--users", str(users), "--spawn-rate", str(max(1, users // 5)), "--run-time", run_time,
        "--stop-timeout", "5", "--host", system.base_url, "--csv", str(prefix), "--only-summary",
        "--loglevel", "WARNING", *classes,
    ]  # fmt: skip
    before = sum(system.cpu_seconds().values())
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    locust_cpu = 0.0
    while proc.poll() is None:
        try:
            locust_cpu = cpu_seconds(proc.pid)
        except OSError:
            break
        time.sleep(0.5)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    server_cpu = sum(system.cpu_seconds().values()) - before
    print_stats(prefix, server_cpu, locust_cpu)
    if proc.returncode not in (0, 1):  # 1: some requests failed, still a result
        print(err[-2000:], file=sys.stderr)
    return prefix


def print_stats(prefix: Path, server_cpu: float, locust_cpu: float) -> None:
    rows = list(csv.DictReader(open(f"{prefix}_stats.csv")))
    print("| request | count | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total = 0
    for r in rows:
        name = r["Name"] if r["Name"] != "Aggregated" else "**all**"
        print(
            f"| {name} | {r['Request Count']} | {r['Failure Count']} | {float(r['Requests/s']):.1f} "
            f"| {r['50%']} | {r['95%']} | {r['99%']} | {float(r['Max Response Time']):.0f} |"
        )
        if r["Name"] == "Aggregated":
            total = int(r["Request Count"])
    if total:
        print(
            f"\nserver CPU: {server_cpu:.1f} s for {total} requests = "
            f"{1000 * server_cpu / total:.1f} ms CPU per request (all server processes); "
            f"Locust itself used {locust_cpu:.1f} s CPU"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", choices=sorted(PROFILES))
    p.add_argument("--users", type=int, default=40)
    p.add_argument("--run-time", default="60s")
    p.add_argument("--poll-gap", type=float, default=1.0, help="seconds between a user's calls (think time)")
    p.add_argument("--preregister", type=int, default=0, help="phones registered before the run")
    p.add_argument("--codes", type=int, default=2000, help="long codes issued for ReportingPhone")
    args = p.parse_args()
    with LocalSystem(env=SYSTEM_ENV) as system:
        key = system.server_public_key()
        (system.dir / "key.b64").write_text(base64.b64encode(key).decode())
        env = {"ROBERT_LOAD_SERVER_KEY": str(system.dir / "key.b64")}
        if args.profile in ("national", "reporting"):
            codes = system.dir / "codes.txt"
            token = system.issuer_token()
            system.credentials("issuer-sim")  # its certificate, for the mutual-TLS code issuer
            subprocess.run(
                [sys.executable, "-m", "simulator.cli", "codes", "--count", str(args.codes),
                 "--out", str(codes), "--issuer", system.codes_address,
                 "--issuer-token", token, "--tls-dir", str(system.dir / "tls")],
                env=system.env, cwd=ROOT, check=True,
            )  # fmt: skip
            env["ROBERT_LOAD_CODES_FILE"] = str(codes)
        rate = asyncio.run(preregister(system, key, args.preregister))
        if args.preregister:
            print(
                f"pre-registered {args.preregister} phones: {rate:.1f} registrations/s"
                " (8 concurrent clients)\n"
            )
        print(f"profile {args.profile}: {args.users} users, {args.run_time}, think time {args.poll_gap} s, "
              f"{args.preregister} phones registered before\n")  # fmt: skip
        run_locust(system, args.profile, args.users, args.run_time, args.poll_gap, env)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
