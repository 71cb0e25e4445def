"""Two complete systems federated on one machine (0x21 = A, 0x22 = B): real processes, real gRPC with
mutual TLS between their federation services, one shared K_G set up with ``robert keys``.

A phone registered in A meets phones registered in B; B's phone's user reports in B with a code issued
in B; A's phone is told at risk by A's server, B's reporter is not. Then A goes down while another B
user reports: B's forwarder retries with back-off; A comes back, receives the batch, but its answer is
lost (a relay swallows it) and the forwarder is killed (SIGKILL) while waiting for it; restarted, it
delivers again and A answers "duplicate": nothing lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from robert_common.clock import EPOCH_DURATION, Clock, write_clock_shift
from simulator.backend import GrpcIssuer
from simulator.phone import Phone
from tests.robert_server.federation.two_systems import Country, HoldingProxy, federate

pytestmark = pytest.mark.slow

A, B = 0x21, 0x22
MINUTES = 45  # of each encounter: three whole epochs, at 1 m (at risk for sure)


async def until(what: str, check: Callable[[], Any], within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)


def meet(listener: Phone, speaker: Phone, t0: int, every: int = 5) -> None:
    """``listener`` hears ``speaker`` for MINUTES from ``t0`` (NTP s), a HELLO every ``every`` s."""
    for t in range(t0, t0 + MINUTES * 60, every):
        listener.hear(speaker.hello(t), rssi=-40, time_collected=t)


async def risk(phone: Phone) -> int:
    r = await phone.status()
    assert r.status == 200, r.body
    return int(r.body["riskLevel"])


async def kpis(country: Country) -> dict[str, Any]:
    return await asyncio.to_thread(country.kpis)


async def test_two_countries_notify_across_the_border_exactly_once(tmp_path: Path) -> None:
    a, b, shift = await asyncio.to_thread(federate, tmp_path, A, B)
    proxy = HoldingProxy(a.ports["federation"])
    await proxy.start()
    b.env["ROBERT_FEDERATION_PARTNERS"] = "[]"
    b.partner_with(a, endpoint=f"127.0.0.1:{proxy.port}")  # B reaches A through the relay
    forwarder: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start, "forwarder"))
        forwarder = b.spawn("federation", "forward", log="forwarder.log")  # B's, ours to kill
        keys = {c.cc: base64.b64decode(c.robert("keys", "public").strip()) for c in (a, b)}
        clock = Clock(shift)
        async with aiohttp.ClientSession() as http:

            def phone(c: Country) -> Phone:
                return Phone(c.base_url, keys[c.cc], clock=clock, http=http)

            a1, a2, a3, b1, b2, b3 = phone(a), phone(a), phone(a), phone(b), phone(b), phone(b)
            for p in (a1, a2, a3, b1, b2, b3):
                assert (await p.register()).status == 201
            assert a1.time_start is not None
            t0 = a1.time_start + (a1.epoch_now() + 1) * EPOCH_DURATION  # the next whole epoch
            meet(b1, a1, t0)  # across the border
            meet(b1, b2, t0)  # at home
            meet(b3, a3, t0)  # across the border, reported later
            write_clock_shift(shift, t0 + MINUTES * 60 + 300 - clock.ntp_now())
            await asyncio.sleep(1.2)  # every process re-reads the shift within a second
            issuer = GrpcIssuer(f"127.0.0.1:{b.ports['codes']}", await asyncio.to_thread(b.issuer_token))
            try:
                # --- B's user reports in B; A's phone is told by A ------------------------------
                assert (await b1.report(await issuer.get_code())).status == 200
                assert await until("a1 at risk", lambda: risk(a1)) == 4
                assert await until("b2 at risk", lambda: risk(b2)) == 4
                assert await risk(b1) == 0 and await risk(a2) == 0 and await risk(a3) == 0
                ka, kb = await kpis(a), await kpis(b)
                assert kb["reports"] == 1 and ka["reports"] == 0
                assert kb["federationContactsForwarded_0x21"] == 3  # a1's three EBIDs (epochs)
                assert ka["federationContactsReceived_0x22"] == 3 and ka["federationContactsRefused"] == 0
                scored_once = ka["hellosScored"]
                assert scored_once == MINUTES * 60 // 5

                # --- A down: B retries with back-off -----------------------------------------
                await asyncio.to_thread(a.stop)
                assert (await b3.report(await issuer.get_code())).status == 200
                fwd_metrics = b.ports["fwd_metrics"]

                async def failures() -> float:
                    return await asyncio.to_thread(
                        b.metric, fwd_metrics, "robert_federation_delivery_failures_total", partner="0x21"
                    )

                assert await until("B's retries", lambda: _at_least(failures, 3))
                # --- A back; its answer is lost and B's forwarder is killed waiting for it ------
                proxy.hold = True
                await asyncio.to_thread(a.start)
                await until("A to store the batch", lambda: _received(a, 6), within=90)
                forwarder.send_signal(signal.SIGKILL)
                forwarder.wait()
                assert (await kpis(b))["federationContactsForwarded_0x21"] == 3  # not acknowledged
                proxy.hold = False
                proxy.drop_connections()
                forwarder = b.spawn("federation", "forward", log="forwarder.log")
                await until("B to count the delivery", lambda: _forwarded(b, 6))
                assert await until("a3 at risk", lambda: risk(a3)) == 4
            finally:
                await issuer.close()
        ka, kb = await kpis(a), await kpis(b)
        assert ka["federationContactsReceived_0x22"] == 6 and kb["federationContactsForwarded_0x21"] == 6
        assert ka["hellosScored"] == 2 * scored_once  # nothing doubled
        assert kb["reports"] == 2 and ka["reports"] == 0
    finally:
        if forwarder is not None and forwarder.poll() is None:
            forwarder.send_signal(signal.SIGTERM)
            forwarder.wait(timeout=30)
        await proxy.stop()
        await asyncio.gather(asyncio.to_thread(a.stop), asyncio.to_thread(b.stop))
    assert "Traceback" not in a.log() + b.log() + b.log("forwarder.log")


async def _at_least(value: Callable[[], Any], n: float) -> bool:
    return bool(await value() >= n)


async def _received(a: Country, n: int) -> bool:
    try:
        return bool((await kpis(a))["federationContactsReceived_0x22"] >= n)
    except OSError:
        return False  # A still starting


async def _forwarded(b: Country, n: int) -> bool:
    return bool((await kpis(b))["federationContactsForwarded_0x21"] >= n)
