"""``robert-sim run simulator/scenarios/two-countries.yaml`` against two federated ``robert up`` systems.

carl (de) reports in de; alice (fr) met him for an hour: fr's server must tell her, through the
federation between the two systems; dora (de) is told by de's server; nobody else is. The simulator
talks to both systems (each phone to its own country's), and the result is checked against the
scenario's ground truth.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from simulator.cli import main
from tests.robert_server.federation.two_systems import federate

pytestmark = pytest.mark.slow

SCENARIO = Path(__file__).parents[2] / "simulator" / "scenarios" / "two-countries.yaml"


async def test_the_two_countries_scenario_matches_its_ground_truth(tmp_path: Path) -> None:
    fr, de, shift = await asyncio.to_thread(federate, tmp_path, 0x21, 0x22)
    try:
        await asyncio.gather(asyncio.to_thread(fr.start), asyncio.to_thread(de.start))
        tokens = await asyncio.gather(asyncio.to_thread(fr.issuer_token), asyncio.to_thread(de.issuer_token))
        out = tmp_path / "result.json"
        argv = ["run", str(SCENARIO), "--clock-shift-file", str(shift), "--matcher-wait", "4",
                "--no-progress", "--json", str(out)]  # fmt: skip
        for name, c, token in (("fr", fr, tokens[0]), ("de", de, tokens[1])):
            p = c.ports
            argv += [
                "--country",
                f"{name}={c.base_url},127.0.0.1:{p['crypto']},127.0.0.1:{p['codes']},{token}",
            ]
        assert await asyncio.to_thread(main, argv) == 0
        kfr, kde = await asyncio.gather(asyncio.to_thread(fr.kpis), asyncio.to_thread(de.kpis))
    finally:
        await asyncio.gather(asyncio.to_thread(fr.stop), asyncio.to_thread(de.stop))
    result = json.loads(out.read_text())
    phones = result["phones"]
    assert {n: p["country"] for n, p in phones.items()} == {
        "alice": "fr", "bob": "fr", "carl": "de", "dora": "de", "emil": "de"
    }  # fmt: skip
    assert {n for n, p in phones.items() if p["exposed"]} == {"alice", "dora"}
    assert {n for n, p in phones.items() if p["notified_at"] is not None} == {"alice", "dora"}
    assert all(p["errors"] == [] and p["poll_errors"] == 0 for p in phones.values()), phones
    t = result["totals"]
    assert (t["tp"], t["fp"], t["fn"], t["tn"]) == (2, 0, 0, 3)
    assert kde["reports"] == 1 and kfr["reports"] == 0
    assert kde["federationContactsForwarded_0x21"] == kfr["federationContactsReceived_0x22"] > 0
    assert kfr["federationContactsRefused"] == 0
