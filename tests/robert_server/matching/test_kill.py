"""A real ``robert matcher --once`` process killed (SIGKILL) mid-run, then another worker: the final state is
exact. The child follows the test's ManualClock through ROBERT_CLOCK_SHIFT_FILE."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from robert_common.clock import write_clock_shift
from robert_server import contacts, registrations
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
    env = {
        **os.environ,
        "ROBERT_MONGODB_URI": mongo_uri,
        "ROBERT_MONGODB_DATABASE": matching.db.name,
        "ROBERT_CRYPTO_ADDRESS": matching.cs.address,
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
        # Kill it as soon as it has finished one group of batches and claimed the next (seen claimed, so
        # that no claim of the dead worker is still on its way to the database): it is working on them.
        while child.returncode is None and not (  # noqa: ASYNC110
            await contacts.pending_batches(matching.db) < REPORTS and await _leased(matching) > 0
        ):
            await asyncio.sleep(0.02)
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
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
