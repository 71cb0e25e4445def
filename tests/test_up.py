"""``robert up`` (what `make run` starts): the whole system comes up, serves a phone, and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from robert_common.mongo import free_port
from simulator.backend import BackendError, fetch_server_key
from simulator.phone import Phone

pytestmark = pytest.mark.slow


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = asyncio.get_running_loop().time() + 90.0
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, "robert up exited during start-up"
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            assert asyncio.get_running_loop().time() < deadline, "the system did not become healthy"
            await asyncio.sleep(0.5)


async def test_robert_up_serves_a_phone_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "metrics", "crypto", "codes", "portal", "idp")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")},
        "ROBERT_DATA_DIR": str(tmp_path / "data"),
        "ROBERT_HTTP_PORT": str(ports["http"]),
        "ROBERT_METRICS_PORT": str(ports["metrics"]),
        "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{ports['crypto']}",
        "ROBERT_CRYPTO_ADDRESS": f"127.0.0.1:{ports['crypto']}",
        "ROBERT_CODES_LISTEN": f"127.0.0.1:{ports['codes']}",
        "ROBERT_CODES_ADDRESS": f"127.0.0.1:{ports['codes']}",
        "ROBERT_CAPTCHA": "off",
        "ROBERT_PORTAL_PORT": str(ports["portal"]),
        "ROBERT_PORTAL_DEV_IDP_PORT": str(ports["idp"]),
    }
    log_path = tmp_path / "up.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for over HTTP
        [sys.executable, "-m", "robert_server.cli", "up"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    try:
        await _wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        uri_file = tmp_path / "data" / "mongodb.uri"
        assert uri_file.read_text().startswith("mongodb://127.0.0.1:")

        tls_dir = tmp_path / "data" / "tls"  # robert up created the CA and a certificate per component
        assert {p.name for p in tls_dir.glob("*.key")} >= {
            f"{n}.key" for n in ("ca", "crypto", "api", "matcher")
        }
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in tls_dir.glob("*.key"))
        key = await fetch_server_key(
            f"127.0.0.1:{ports['crypto']}", credentials=_plane_credentials(tls_dir.parent)
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
            await _wait_healthy(f"http://127.0.0.1:{ports['portal']}/health", proc)
            await _wait_healthy(f"http://127.0.0.1:{ports['idp']}/.well-known/openid-configuration", proc)
            async with http.get(f"http://127.0.0.1:{ports['portal']}/login", allow_redirects=False) as r:
                assert r.status == 303, await r.text()
                assert r.headers["Location"].startswith(f"http://127.0.0.1:{ports['idp']}/auth?")
            assert (tmp_path / "data" / "portal" / "issuer_token").stat().st_mode & 0o077 == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log_file.close()
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


def _plane_credentials(data_dir: Path) -> grpc.ChannelCredentials:
    """A client certificate of the internal plane robert up made (any plane certificate may read the
    registration public key)."""
    tls_dir = data_dir / "tls"
    return grpc.ssl_channel_credentials(
        (tls_dir / "ca.pem").read_bytes(),
        (tls_dir / "seed.key").read_bytes(),
        (tls_dir / "seed.pem").read_bytes(),
    )


async def _wait_crypto(address: str, proc: subprocess.Popen[bytes], data_dir: Path) -> bytes:
    """The registration key from the crypto process at ``address``, once it answers."""
    deadline = asyncio.get_running_loop().time() + 90.0
    while True:
        assert proc.poll() is None, "robert up exited during start-up"
        try:
            return await fetch_server_key(address, credentials=_plane_credentials(data_dir))
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
    http_port, metrics, crypto, crypto_metrics = free_port(), _free_ports(2), _free_ports(2), _free_ports(2)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")},
        "ROBERT_DATA_DIR": str(tmp_path / "data"),
        "ROBERT_HTTP_PORT": str(http_port),
        "ROBERT_METRICS_PORT": str(metrics),
        "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{crypto}",
        "ROBERT_CRYPTO_METRICS_PORT": str(crypto_metrics),
        "ROBERT_CODES_LISTEN": f"127.0.0.1:{free_port()}",
        "ROBERT_CAPTCHA": "off",
        "ROBERT_STATUS_MIN_EPOCH_GAP": "0",
        "ROBERT_API_PROCESSES": "2",
        "ROBERT_CRYPTO_PROCESSES": "2",
    }
    env["ROBERT_CODES_ADDRESS"] = env["ROBERT_CODES_LISTEN"]
    log_path = tmp_path / "up.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for over HTTP
        [sys.executable, "-m", "robert_server.cli", "up", "--without", "portal"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    phones, polls = 16, 2
    try:
        for i in range(2):
            await _wait_healthy(f"http://127.0.0.1:{metrics + i}/health", proc)
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
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log_file.close()
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
