"""``robert up`` (what `make run` starts): the whole system comes up, serves a phone, and stops cleanly."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from robert_common.mongo import free_port
from simulator.backend import BackendError, fetch_server_key
from simulator.phone import Phone
from tests.fixtures.up import plane_credentials, start_up, stop_up, up_env, up_ports, wait_healthy

pytestmark = pytest.mark.slow


async def test_robert_up_serves_a_phone_and_stops_cleanly(tmp_path: Path) -> None:
    ports = up_ports()
    log_path = tmp_path / "up.log"
    proc = start_up(tmp_path, up_env(tmp_path, ports), log=log_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        uri_file = tmp_path / "data" / "mongodb.uri"
        assert uri_file.read_text().startswith("mongodb://127.0.0.1:")

        tls_dir = tmp_path / "data" / "tls"  # robert up created the CA and a certificate per component
        assert {p.name for p in tls_dir.glob("*.key")} >= {
            f"{n}.key" for n in ("ca", "crypto", "api", "matcher")
        }
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in tls_dir.glob("*.key"))
        key = await fetch_server_key(
            f"127.0.0.1:{ports['crypto']}", credentials=plane_credentials(tls_dir.parent)
        )
        async with aiohttp.ClientSession() as http:
            phone = Phone(f"http://127.0.0.1:{ports['http']}", key, http=http)
            registered = await phone.register()
            assert registered.status == 201, registered.body
            assert len(phone.tuples) >= 96 * 3  # bundle_days = 4, from the current epoch
            status = await phone.status()
            assert status.status == 200, status.body
            assert status.body["riskLevel"] == 0

            # ProStopCovid: the portal sends a login to the development provider robert up started.
            await wait_healthy(f"http://127.0.0.1:{ports['portal']}/health", proc)
            await wait_healthy(f"http://127.0.0.1:{ports['idp']}/.well-known/openid-configuration", proc)
            async with http.get(f"http://127.0.0.1:{ports['portal']}/login", allow_redirects=False) as r:
                assert r.status == 303, await r.text()
                assert r.headers["Location"].startswith(f"http://127.0.0.1:{ports['idp']}/auth?")
            assert (tmp_path / "data" / "portal" / "issuer_token").stat().st_mode & 0o077 == 0
    finally:
        stop_up(proc)
    stderr = log_path.read_bytes()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert not uri_file.exists()  # the embedded database is gone with it
    assert b"Traceback" not in stderr


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (robert up gives process i the port base + i)."""
    for _ in range(100):
        base = free_port()
        try:
            for i in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {count} consecutive free ports")


async def _wait_crypto(address: str, proc: subprocess.Popen[bytes], data_dir: Path) -> bytes:
    """The registration key from the crypto process at ``address``, once it answers."""
    deadline = asyncio.get_running_loop().time() + 90.0
    while True:
        assert proc.poll() is None, "robert up exited during start-up"
        try:
            return await fetch_server_key(address, credentials=plane_credentials(data_dir))
        except BackendError:
            assert asyncio.get_running_loop().time() < deadline, f"no crypto service at {address}"
            await asyncio.sleep(0.5)


def _counter(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples of counter ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def test_robert_up_spreads_polls_over_two_api_and_two_crypto_processes(tmp_path: Path) -> None:
    # Process i of the API and of the crypto service listens on base port + i.
    ports = {**up_ports(), "metrics": _free_ports(2), "crypto": _free_ports(2)}
    http_port, metrics, crypto, crypto_metrics = (
        ports["http"],
        ports["metrics"],
        ports["crypto"],
        _free_ports(2),
    )
    env = up_env(
        tmp_path, ports,
        ROBERT_CRYPTO_METRICS_PORT=str(crypto_metrics),
        ROBERT_STATUS_MIN_EPOCH_GAP="0",
        ROBERT_API_PROCESSES="2",
        ROBERT_CRYPTO_PROCESSES="2",
    )  # fmt: skip
    log_path = tmp_path / "up.log"
    proc = start_up(tmp_path, env, "--without", "portal", log=log_path)
    phones, polls = 16, 2
    try:
        for i in range(2):
            await wait_healthy(f"http://127.0.0.1:{metrics + i}/health", proc)
        keys = [await _wait_crypto(f"127.0.0.1:{crypto + i}", proc, tmp_path / "data") for i in range(2)]
        assert keys[0] == keys[1]
        key = keys[0]
        # A new connection per request: the kernel picks the API process of each connection.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for _ in range(phones):
                phone = Phone(f"http://127.0.0.1:{http_port}", key, http=http)
                assert (r := await phone.register()).status == 201, r.body
                for _ in range(polls):
                    assert (r := await phone.status()).status == 200, r.body
            api_metrics = [
                await (await http.get(f"http://127.0.0.1:{metrics + i}/metrics")).text() for i in range(2)
            ]
            crypto_metrics_text = [
                await (await http.get(f"http://127.0.0.1:{crypto_metrics + i}/metrics")).text()
                for i in range(2)
            ]
    finally:
        stop_up(proc)
    served = [_counter(m, "robert_api_requests_total", endpoint="status", status="200") for m in api_metrics]
    assert sum(served) == phones * polls
    assert all(n > 0 for n in served), served  # both API processes took connections
    calls = [
        _counter(m, "robert_crypto_rpc_total", method="AuthenticateRequests") for m in crypto_metrics_text
    ]
    registrations = [
        _counter(m, "robert_crypto_rpc_total", method="CreateRegistration") for m in crypto_metrics_text
    ]
    assert sum(registrations) == phones
    assert all(n > 0 for n in calls), calls  # both crypto processes authenticated polls
    # Every server process froze its start-up heap (robert_common/heap.py: no full collection walks
    # it again) and times its collections.
    for m in api_metrics + crypto_metrics_text:
        assert _counter(m, "robert_gc_frozen_objects") > 50_000
        assert _counter(m, "robert_gc_pause_seconds_count") > 0
    assert all(n > 0 for n in registrations), registrations
    assert proc.returncode == 0, log_path.read_text()[-2000:]
