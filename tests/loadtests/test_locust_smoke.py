"""The headless Locust smoke profile against a real API server started here: failure rate under 1 %."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
@pytest.mark.api_settings(status_min_epoch_gap=0)
async def test_locust_smoke_profile(api_server: Any, tmp_path: Path) -> None:
    key = tmp_path / "server_key.der"
    key.write_bytes(api_server.server_public_key)
    codes = [f"SMOKE{i:03d}" for i in range(200)]
    api_server.verifier.add(*codes)
    (tmp_path / "codes.txt").write_text("\n".join(codes) + "\n")
    env = {
        **os.environ,
        "ROBERT_LOAD_SERVER_KEY": str(key),
        "ROBERT_LOAD_CODES_FILE": str(tmp_path / "codes.txt"),
        "ROBERT_LOAD_POLL_GAP": "0.3",
        "ROBERT_LOAD_REGISTER_WAIT": "0.5",
        "ROBERT_LOAD_REPORT_WAIT": "1",
        "ROBERT_LOAD_SPREAD": "0",
        "ROBERT_LOAD_WEIGHTS": "3,2,1",
        "PYTHONPATH": str(ROOT),
    }
    stats_file = tmp_path / "stats.json"  # locust adds ".json" to the name it is given
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
        "--headless", "--users", "6", "--spawn-rate", "6", "--run-time", "6s", "--stop-timeout", "3",
        "--host", api_server.base_url, "--json-file", str(tmp_path / "stats"), "--only-summary",
        "--loglevel", "WARNING",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert stats_file.exists(), out.decode()[-3000:]
    stats = json.loads(stats_file.read_text())
    by_name = {s["name"]: s for s in stats}
    total = sum(s["num_requests"] for s in stats)
    print({name: (s["num_requests"], s["num_failures"]) for name, s in by_name.items()})
    failures = sum(s["num_failures"] for s in stats)
    assert {"/register", "/status", "/report"} <= set(by_name), out.decode()[-2000:]
    assert total >= 30, out.decode()[-2000:]
    assert failures / total < 0.01, out.decode()[-2000:]
    assert by_name["/report"]["num_requests"] >= 1
