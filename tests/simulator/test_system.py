"""simulator.system.LocalSystem: the system as separate processes, for benchmarks, load tests, simulations."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import aiohttp
import pytest

from simulator.backend import GrpcIssuer
from simulator.phone import Phone
from simulator.system import LaunchError, LocalSystem

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_local_system_serves_phones_moves_time_and_stops_cleanly() -> None:
    system = LocalSystem(("crypto", "codes", "api"), env={"ROBERT_STATUS_MIN_EPOCH_GAP": "0"})
    await asyncio.to_thread(system.start)
    try:
        key = system.server_public_key()
        async with aiohttp.ClientSession() as http:
            phone = Phone(system.base_url, key, http=http)
            reporter = Phone(system.base_url, key, http=http)
            assert (await phone.register()).status == 201
            assert (await reporter.register()).status == 201
            assert (await phone.status()).status == 200
            reporter.hear(phone.hello(), rssi=-50)
            code = await GrpcIssuer(
                system.codes_address, system.issuer_token(), credentials=system.credentials("issuer-test")
            ).get_code()
            assert (await reporter.report(code)).status == 200

            before = system.processes["api"].pid
            await asyncio.to_thread(system.restart, "api")  # as the restart-storm benchmark does
            assert system.processes["api"].pid != before and not _alive(before)
            assert (await phone.status()).status == 200

            system.shift_clock(3 * 86_400)
            await asyncio.sleep(1.5)  # components re-read the shift file within a second
            server_time = dt.datetime.fromisoformat(
                (await phone.clock_info()).body["time"].replace("Z", "+00:00")
            )
            assert server_time - dt.datetime.now(dt.UTC) > dt.timedelta(days=2, hours=23)

        cpu = system.cpu_seconds()
        assert set(cpu) == {"crypto", "codes", "api", "database"}
        assert all(seconds > 0 for seconds in cpu.values())
    finally:
        pids, folder = list(system.pids().values()), system.dir
        await asyncio.to_thread(system.stop)
    assert not any(_alive(pid) for pid in pids)
    assert not folder.exists()


async def test_local_system_reports_a_component_that_cannot_start() -> None:
    with pytest.raises(ValueError, match="unknown components"):
        LocalSystem(("crypto", "frontend"))
    system = LocalSystem(("api",), env={"ROBERT_HTTP_PORT": "70000"})  # not a port: the API refuses it
    with pytest.raises(LaunchError, match="api exited") as info:
        await asyncio.to_thread(system.start)
    assert "70000" in str(info.value) or "http_port" in str(info.value).lower()
    assert not system.dir.exists() and system.pids() == {}


def test_local_system_runs_several_processes_of_the_api_and_crypto_only() -> None:
    for counts in ({"codes": 2}, {"api": 0}):
        with pytest.raises(ValueError, match="process counts"):
            LocalSystem(("crypto", "codes", "api"), processes=counts)
    system = LocalSystem(("crypto", "api"), processes={"api": 2, "crypto": 3})
    try:
        assert len(set(system.metrics_ports)) == 2 and len(set(system.crypto_addresses)) == 3
        assert system.crypto_address == system.crypto_addresses[0]
    finally:
        system.stop()
