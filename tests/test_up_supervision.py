"""``robert up`` supervision (issue 10 item 9), against real processes: a component or the embedded
database killed with SIGKILL is started again (and the log says so), a phone is served again; a component
that keeps failing stops the whole system."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest

from simulator.backend import fetch_server_key
from simulator.phone import Phone
from tests.fixtures.up import (
    plane_credentials,
    start_up,
    stop_up,
    up_child,
    up_children,
    up_env,
    up_ports,
    wait_healthy,
)

pytestmark = pytest.mark.slow

# The API, the crypto service and the database only: what these tests kill and watch come back.
WITHOUT = ("--without", "matcher", "--without", "codes", "--without", "portal", "--without", "dev-idp")


async def _until(check, within: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "not back in time"
        await asyncio.sleep(0.5)


def _log_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_bytes().splitlines():
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return lines


async def test_killed_crypto_service_and_database_come_back_and_a_phone_is_served(tmp_path: Path) -> None:
    ports = up_ports()
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o755)  # as an earlier version left it
    (tmp_path / "data" / "mongodb.uri").write_text("stale\n")
    (tmp_path / "data" / "mongodb.uri").chmod(0o644)
    log_path = tmp_path / "up.log"
    env = up_env(tmp_path, ports, ROBERT_STATUS_MIN_EPOCH_GAP="0")
    proc = start_up(tmp_path, env, *WITHOUT, log=log_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        _assert_private(tmp_path / "data")
        credentials = plane_credentials(tmp_path / "data")  # robert up's development certificates
        key = await fetch_server_key(f"127.0.0.1:{ports['crypto']}", credentials=credentials)
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
                victim = up_child(proc.pid, marker)
                os.kill(victim, signal.SIGKILL)
                await _until(lambda v=victim, m=marker: _respawned(proc.pid, m, v))
                await _until(served)
    finally:
        stop_up(proc)
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
    found = [p for p, cmd in up_children(up_pid).items() if marker in cmd]
    return bool(found) and old not in found


async def test_a_component_that_keeps_failing_stops_the_system(tmp_path: Path) -> None:
    ports = up_ports()
    log_path = tmp_path / "up.log"
    env = up_env(
        tmp_path, ports,
        ROBERT_STATUS_MIN_EPOCH_GAP="0", ROBERT_UP_MAX_RESTARTS="1", ROBERT_UP_RESTART_WINDOW="600",
    )  # fmt: skip
    proc = start_up(tmp_path, env, *WITHOUT, log=log_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        first = up_child(proc.pid, " crypto")
        os.kill(first, signal.SIGKILL)
        await _until(lambda: _respawned(proc.pid, " crypto", first))
        os.kill(up_child(proc.pid, " crypto"), signal.SIGKILL)  # the second failure in the window
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert any(line["msg"] == "component keeps failing; stopping the system" for line in _log_lines(log_path))
    assert not (tmp_path / "data" / "mongodb.uri").exists()
