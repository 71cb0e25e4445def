"""The simulation report's timeline picture (simulator/report.py), drawn from a result built here.

The timeline needs matplotlib, which comes with the optional ``plot`` extra (``make install`` installs it);
without it this test is skipped with that reason, and the end-to-end run (test_end_to_end.py) still runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.groundtruth import ground_truth
from simulator.report import PhoneOutcome, SimulationResult, timeline_png
from simulator.scenario import SECONDS_PER_DAY, load_scenario

SMALL = Path(__file__).parents[2] / "simulator" / "scenarios" / "small.yaml"


def test_timeline_png_of_a_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the timeline needs the 'plot' extra (pip install '.[plot]')")
    scenario = load_scenario(SMALL)
    outcomes = {name: PhoneOutcome(name, registered=True, polls=4) for name in scenario.phones}
    outcomes["bob"].notified_at = SECONDS_PER_DAY + 12 * 3600
    outcomes["carol"].notified_at = SECONDS_PER_DAY + 13 * 3600  # a false positive gets its own colour
    result = SimulationResult(scenario, ground_truth(scenario), outcomes, start_unix=0.0)
    assert [result.verdict(n) for n in ("alice", "bob", "carol", "dave")] == ["TN", "TP", "FP", "TN"]
    png = tmp_path / "timeline.png"
    timeline_png(result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
