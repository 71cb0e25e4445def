"""``python -m bench status``: /status calls per second and CPU milliseconds per call (API + crypto).

Runs the system as it is deployed, one process per role, on the embedded database: ``robert crypto``
and ``robert api`` as separate processes, this process as the phones' client. Registers phones, then
keeps ``CONCURRENCY`` status polls in flight for ``DURATION`` seconds (minimum gap disabled so a phone
may poll again at once; the conditional registration update still runs) and reads the CPU time of
each server process from ``/proc/<pid>/stat`` before and after. Goal: at most 1 ms of CPU per status
call across the API and crypto processes. The database process's CPU is printed for information
(SecantusDB is pure Python and is not what production runs).

Environment: BENCH_PHONES (default 200), BENCH_DURATION seconds (10), BENCH_CONCURRENCY (32).
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.procs import cpu_seconds
from robert_common.clock import Clock
from robert_common.mongo import EmbeddedMongo, free_port
from robert_server.crypto_client import CryptoClient
from simulator.phone import Phone

PHONES = int(os.environ.get("BENCH_PHONES", "200"))
DURATION = float(os.environ.get("BENCH_DURATION", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))


def spawn(args: list[str], env: dict[str, str], log: Path, profile: str = "") -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - closed when the process ends
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    cmd = [sys.executable, *prefix, "-m", "robert_server.cli", *args]
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=out)


async def wait_http(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in time")
            await asyncio.sleep(0.2)


async def drive(base_url: str, crypto_address: str, pids: dict[str, int]) -> None:
    async with CryptoClient(crypto_address, 5.0) as crypto:
        server_key = await crypto.registration_public_key()
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

        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}

    cpu_ms = {name: 1000 * (after[name] - before[name]) / max(count, 1) for name in pids}
    print(f"status calls: {count} in {elapsed:.1f} s, {errors} errors, concurrency {CONCURRENCY}")
    print(f"status calls per second: {count / elapsed:.0f}")
    print(f"CPU ms per status call: api {cpu_ms['api']:.2f}, crypto {cpu_ms['crypto']:.2f}, "
          f"api+crypto {cpu_ms['api'] + cpu_ms['crypto']:.2f} (goal <= 1.00)")  # fmt: skip
    print(f"  (database process, for information: {cpu_ms['database']:.2f} ms per call)")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp, EmbeddedMongo(None) as mongo:
        data = Path(tmp)
        crypto_port, http_port, metrics_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "ROBERT_DATA_DIR": str(data),
            "ROBERT_MONGODB_URI": mongo.uri,
            "ROBERT_KEYSTORE_PASSPHRASE": base64.b64encode(os.urandom(18)).decode(),
            "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{crypto_port}",
            "ROBERT_CRYPTO_ADDRESS": f"127.0.0.1:{crypto_port}",
            "ROBERT_HTTP_PORT": str(http_port),
            "ROBERT_METRICS_PORT": str(metrics_port),
            "ROBERT_CAPTCHA": "off",
            "ROBERT_STATUS_MIN_EPOCH_GAP": "0",
            "ROBERT_LOG_LEVEL": "WARNING",
        }
        subprocess.run(
            [sys.executable, "-m", "robert_server.cli", "keys", "init"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        crypto = spawn(["crypto"], env, data / "crypto.log")
        # BENCH_PROFILE_API=<file>: write a cProfile of the API process there (wall-clock timer).
        api = spawn(["api"], env, data / "api.log", os.environ.get("BENCH_PROFILE_API", ""))
        try:
            asyncio.run(wait_http(f"http://127.0.0.1:{metrics_port}/health"))
            assert mongo.proc is not None
            pids = {"api": api.pid, "crypto": crypto.pid, "database": mongo.proc.pid}
            asyncio.run(drive(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{crypto_port}", pids))
        except Exception:
            for name in ("api", "crypto"):
                print(f"--- {name}.log ---\n" + (data / f"{name}.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            for proc in (api, crypto):
                proc.terminate()
            for proc in (api, crypto):
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    main()
