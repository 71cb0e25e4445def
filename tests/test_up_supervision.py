"""``robert up`` supervision (issue 10 item 9), against real processes: a component or the embedded
database killed with SIGKILL is started again (and the log says so), a phone is served again; a component
that keeps failing stops the whole system."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import orjson
import pytest

from robert_common.mongo import free_port
from simulator.backend import fetch_server_key
from simulator.phone import Phone
from tests.test_up import _wait_healthy

pytestmark = pytest.mark.slow


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, with their command lines."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return out


def _child(pid: int, marker: str) -> int:
    found = [p for p, cmd in _children(pid).items() if marker in cmd]
    assert len(found) == 1, _children(pid)
    return found[0]


async def _until(check, within: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "not back in time"
        await asyncio.sleep(0.5)


def _env(tmp_path: Path, ports: dict[str, int], **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")},
        "ROBERT_DATA_DIR": str(tmp_path / "data"),
        "ROBERT_HTTP_PORT": str(ports["http"]),
        "ROBERT_METRICS_PORT": str(ports["metrics"]),
        "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{ports['crypto']}",
        "ROBERT_CRYPTO_ADDRESS": f"127.0.0.1:{ports['crypto']}",
        "ROBERT_CODES_LISTEN": f"127.0.0.1:{ports['codes']}",
        "ROBERT_CODES_ADDRESS": f"127.0.0.1:{ports['codes']}",
        "ROBERT_CAPTCHA": "off",
        "ROBERT_STATUS_MIN_EPOCH_GAP": "0",
        **extra,
    }


def _log_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return lines


async def test_killed_crypto_service_and_database_come_back_and_a_phone_is_served(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "metrics", "crypto", "codes")}
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o755)  # as an earlier version left it
    (tmp_path / "data" / "mongodb.uri").write_text("stale\n")
    (tmp_path / "data" / "mongodb.uri").chmod(0o644)
    log_path = tmp_path / "up.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, watched over HTTP
        [sys.executable, "-m", "robert_server.cli", "up", "--without", "matcher", "--without", "codes",
         "--without", "portal", "--without", "dev-idp"],
        env=_env(tmp_path, ports), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    try:
        await _wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        _assert_private(tmp_path / "data")
        tls_dir = tmp_path / "data" / "tls"  # robert up's development certificates (mutual TLS)
        creds = grpc.ssl_channel_credentials(*(
            (tls_dir / name).read_bytes() for name in ("ca.pem", "seed.key", "seed.pem")
        ))  # fmt: skip
        key = await fetch_server_key(f"127.0.0.1:{ports['crypto']}", credentials=creds)
        async with aiohttp.ClientSession() as http:
            phone = Phone(f"http://127.0.0.1:{ports['http']}", key, http=http)
            assert (await phone.register()).status == 201

            async def served() -> bool:
                assert proc.poll() is None, "robert up stopped"
                try:
                    return (await phone.status()).status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            for marker in (" crypto", "secantus"):
                victim = _child(proc.pid, marker)
                os.kill(victim, signal.SIGKILL)
                await _until(lambda v=victim, m=marker: _respawned(proc.pid, m, v))
                await _until(served)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log_file.close()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    restarted = [line["component"] for line in _log_lines(log_path) if line["msg"] == "component restarted"]
    assert restarted == ["crypto", "database"]
    assert any(line["msg"] == "component exited; restarting it" for line in _log_lines(log_path))


def _assert_private(data: Path) -> None:
    """Issue 10 item 8: the data folder was 0755, the database files and mongodb.uri 0644."""
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "mongodb.uri").stat().st_mode & 0o777 == 0o600
    files = [p for p in (data / "mongo").rglob("*") if p.is_file()]
    assert files, "no database file?"
    for path in [*files, *(data / "mongo").rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, f"{path} readable by others"


async def _respawned(up_pid: int, marker: str, old: int) -> bool:
    found = [p for p, cmd in _children(up_pid).items() if marker in cmd]
    return bool(found) and old not in found


async def test_a_component_that_keeps_failing_stops_the_system(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "metrics", "crypto", "codes")}
    log_path = tmp_path / "up.log"
    log_file = log_path.open("wb")
    env = _env(tmp_path, ports, ROBERT_UP_MAX_RESTARTS="1", ROBERT_UP_RESTART_WINDOW="600")
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "robert_server.cli", "up", "--without", "matcher", "--without", "codes",
         "--without", "portal", "--without", "dev-idp"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    try:
        await _wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        first = _child(proc.pid, " crypto")
        os.kill(first, signal.SIGKILL)
        await _until(lambda: _respawned(proc.pid, " crypto", first))
        os.kill(_child(proc.pid, " crypto"), signal.SIGKILL)  # the second failure in the window
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()
    assert proc.returncode == 1
    assert any(line["msg"] == "component keeps failing; stopping the system" for line in _log_lines(log_path))
    assert not (tmp_path / "data" / "mongodb.uri").exists()
