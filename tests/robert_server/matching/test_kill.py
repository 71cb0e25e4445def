"""A real ``robert matcher --once`` process killed (SIGKILL) mid-run, then another worker: the final state is
exact. The child follows the test's ManualClock through ROBERT_CLOCK_SHIFT_FILE.

The child talks to the crypto service through a gate (a real gRPC server of the same contract) that holds
its second ValidateContacts call: the child is killed while it holds a claimed group it has not validated,
whatever the speed of the machine (the test used to race a busy machine and sometimes saw no group left)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from robert_common.clock import write_clock_shift
from robert_common.rpc import crypto_pb2 as pb
from robert_server import contacts, registrations
from tests.fixtures.crypto import CryptoProxy
from tests.robert_server.matching.conftest import Matching

FULL_EPOCH = 14.0
REPORTS = 12


@pytest.mark.slow
async def test_killed_matcher_process_then_another_worker(
    matching: Matching, mongo_uri: str, tmp_path: Path
) -> None:
    phones = [await matching.phone() for _ in range(2)]
    e = matching.days_ago_epoch(2)
    for k in range(REPORTS):
        await matching.upload(*(matching.contact(p, e + k) for p in phones))
    shift = tmp_path / "shift"
    write_clock_shift(shift, matching.cs.clock.now() - time.time())
    gate = _Gate(matching.cs.address, matching.cs.settings)
    gate_address = await gate.start()
    env = {
        **os.environ,
        "ROBERT_MONGODB_URI": mongo_uri,
        "ROBERT_MONGODB_DATABASE": matching.db.name,
        "ROBERT_CRYPTO_ADDRESS": gate_address,
        "ROBERT_GRPC_TLS_DIR": str(matching.cs.settings.grpc_tls_dir),
        "ROBERT_TIME_START": "20200601",
        "ROBERT_CLOCK_SHIFT_FILE": str(shift),
        "ROBERT_MATCHER_LEASE_SECONDS": "60",
        "ROBERT_LOG_LEVEL": "ERROR",
    }
    started = time.monotonic()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "robert_server.cli", "matcher", "--once",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Kill it once it has finished one group and is validating the next (held by the gate).
        await asyncio.wait_for(gate.holding.wait(), 60)
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await gate.stop()
    left = await contacts.pending_batches(matching.db)
    assert 0 < left < REPORTS, "the child should have been killed mid-run"
    held = await _leased(matching)

    # The dead worker's lease (on the shifted clock) must end before another worker takes its batch.
    matching.advance(time.monotonic() - started + 5)
    await matching.worker().run_once()
    assert await contacts.pending_batches(matching.db) == held
    matching.advance(120)
    await matching.worker().run_once()

    assert await contacts.pending_batches(matching.db) == 0
    for p in phones:
        reg = await registrations.get(matching.db, p.id_a)
        assert reg is not None
        assert reg["exposures"] == {str(e + k): pytest.approx(FULL_EPOCH) for k in range(REPORTS)}
        assert reg["at_risk"] is True and reg["risk_pending"] is False


@pytest.mark.slow
async def test_continuous_matcher_processes_uploads_and_stops_on_sigterm(
    matching: Matching, mongo_uri: str, tmp_path: Path
) -> None:
    heard = await matching.phone()
    shift = tmp_path / "shift"
    write_clock_shift(shift, matching.cs.clock.now() - time.time())
    env = {
        **os.environ,
        "ROBERT_MONGODB_URI": mongo_uri,
        "ROBERT_MONGODB_DATABASE": matching.db.name,
        "ROBERT_CRYPTO_ADDRESS": matching.cs.address,
        "ROBERT_GRPC_TLS_DIR": str(matching.cs.settings.grpc_tls_dir),
        "ROBERT_TIME_START": "20200601",
        "ROBERT_CLOCK_SHIFT_FILE": str(shift),
        "ROBERT_LOG_LEVEL": "ERROR",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "robert_server.cli", "matcher", "--interval", "0.2",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await matching.upload(*(matching.contact(heard, matching.days_ago_epoch(1) + k) for k in range(2)))
        deadline = time.monotonic() + 60
        while await contacts.pending_batches(matching.db) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        reg = await registrations.get(matching.db, heard.id_a)
        assert reg is not None and reg["at_risk"] is True
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), 20) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def _leased(matching: Matching) -> int:
    return await contacts.collection(matching.db).count_documents({"lease_owner": {"$ne": None}})


class _Gate(CryptoProxy):
    """Forwards ValidateContacts to the real crypto service, except the second call, which it holds."""

    def __init__(self, target: str, settings: Any) -> None:
        super().__init__(target, settings)
        self.calls = 0
        self.holding = asyncio.Event()

    async def validate(
        self, request: pb.ValidateContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateContactsResponse:
        self.calls += 1
        if self.calls == 2:
            self.holding.set()
            await asyncio.Event().wait()  # until the child dies and the call is cancelled
        return await self.forward(request)
