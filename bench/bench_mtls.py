"""Cost of mutual TLS on the internal plane: ``python -m bench mtls``.

Starts ``robert crypto`` twice as its own process (simulator.system.LocalSystem): once in plaintext
(ROBERT_GRPC_PLAINTEXT, development only) and once with mutual TLS and per-method rights (the real
configuration). For each it prints the latency of GetRegistrationPublicKey (the cheapest call: what
remains is transport, TLS records and the rights check), its throughput with 16 calls in flight and
the server's CPU per call, then the cost of a new connection (TLS handshake included) to a first call.
"""

from __future__ import annotations

import asyncio
import time

from robert_common.settings import Settings
from robert_server.crypto_client import CryptoClient, CryptoError
from simulator.system import LocalSystem, cpu_seconds

SEQUENTIAL = 2000
CONCURRENT = 8000
IN_FLIGHT = 16
CONNECTIONS = 100


async def _ready(client: CryptoClient) -> None:
    for _ in range(200):
        try:
            await client.registration_public_key()
            return
        except CryptoError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the crypto service did not start")


async def _measure(label: str, settings: Settings, pid: int) -> None:
    client = CryptoClient.from_settings(settings, "api")
    await _ready(client)
    for _ in range(200):  # warm up
        await client.registration_public_key()
    started = time.perf_counter()
    for _ in range(SEQUENTIAL):
        await client.registration_public_key()
    latency = (time.perf_counter() - started) / SEQUENTIAL

    async def worker(n: int) -> None:
        for _ in range(n):
            await client.registration_public_key()

    cpu0 = cpu_seconds(pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker(CONCURRENT // IN_FLIGHT) for _ in range(IN_FLIGHT)))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu0
    await client.close()

    started = time.perf_counter()
    for _ in range(CONNECTIONS):
        async with CryptoClient.from_settings(settings, "api") as fresh:
            await fresh.registration_public_key()
    connect = (time.perf_counter() - started) / CONNECTIONS
    print(
        f"{label:<10} one call {latency * 1e6:6.0f} us | {CONCURRENT / wall:6.0f} calls/s "
        f"({IN_FLIGHT} in flight), server CPU {cpu * 1e6 / CONCURRENT:5.0f} us/call | "
        f"new connection + first call {connect * 1e3:5.2f} ms"
    )


def main() -> None:
    for label, plaintext in (("plaintext", True), ("mutual TLS", False)):
        env = {"ROBERT_GRPC_PLAINTEXT": "true" if plaintext else "false", "ROBERT_LOG_LEVEL": "ERROR"}
        with LocalSystem(("crypto",), env=env) as system:
            update = {"grpc_plaintext": plaintext, "crypto_timeout": 10.0}
            settings = system.client_settings().model_copy(update=update)
            asyncio.run(_measure(label, settings, system.pids()["crypto"]))


if __name__ == "__main__":
    main()
