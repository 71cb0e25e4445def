"""Ground truth: who was really exposed, by the model's own definition.

A phone X is **exposed** when, at the time of some report R (a diagnosed phone's upload), the time X
spent within ``distance_m`` of phones diagnosed and reported by then, counted over the
``lookback_days`` before each of those reports, adds up to at least ``minutes``, and the last of those
close moments lies within ``recent_days`` of R. Distances are the per-minute distances of the BLE model
(simulator/ble.py ``distance_trace``), so the ground truth and the HELLOs describe the same encounters.
Only time when both phones have the app counts (before that nothing could have been recorded).

This mirrors the spirit of the server's rule (PROTOCOL.md 9: contagious period 14 days, at risk only if
the latest exposure is within 7 days) with the public-health definition "15 minutes within 2 metres",
so the comparison shows where the server's RSSI-based score and that definition disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from simulator.ble import distance_trace
from simulator.scenario import SECONDS_PER_DAY, Scenario


@dataclass
class Exposure:
    """What the ground truth says about one phone."""

    phone: str
    exposed: bool = False
    close_seconds: float = 0.0  # the largest qualifying sum found (seconds within distance_m)
    exposed_at: int | None = None  # time of the report that made it exposed (seconds after start)
    sources: set[str] = field(default_factory=set)  # diagnosed phones it was close to


@dataclass(frozen=True)
class _Close:
    """``seconds`` within the distance of diagnosed phone ``source``, during the minute at ``t``."""

    source: str
    t: int
    seconds: float


def close_contacts(scenario: Scenario) -> dict[str, list[_Close]]:
    """For each phone, its close moments with phones that will be diagnosed (both phones installed)."""
    diagnosed = {d.who for d in scenario.diagnoses}
    limit = scenario.ground_truth.distance_m
    out: dict[str, list[_Close]] = defaultdict(list)
    for enc in scenario.encounters:
        if enc.a not in diagnosed and enc.b not in diagnosed:
            continue
        installed = max(scenario.phones[enc.a].joins_at, scenario.phones[enc.b].joins_at)
        trace = distance_trace(
            scenario.seed, enc.a, enc.b, enc.start, enc.duration, enc.distance_m, scenario.ble
        )
        for t, seconds, d in trace:
            overlap = min(seconds, t + seconds - installed)
            if d > limit or overlap <= 0:
                continue
            if enc.b in diagnosed:
                out[enc.a].append(_Close(enc.b, t, overlap))
            if enc.a in diagnosed:
                out[enc.b].append(_Close(enc.a, t, overlap))
    return out


def ground_truth(scenario: Scenario) -> dict[str, Exposure]:
    """Exposure of every phone of the scenario (see the module docstring for the definition)."""
    gt = scenario.ground_truth
    lookback, recent = gt.lookback_days * SECONDS_PER_DAY, gt.recent_days * SECONDS_PER_DAY
    reported_at = {d.who: d.at for d in scenario.diagnoses}
    result = {name: Exposure(name) for name in scenario.phones}
    for phone, moments in close_contacts(scenario).items():
        exp = result[phone]
        for report in sorted(reported_at.values()):
            counted = [
                m
                for m in moments
                if reported_at[m.source] <= report
                and reported_at[m.source] - lookback <= m.t < reported_at[m.source]
            ]
            total = sum(m.seconds for m in counted)
            exp.close_seconds = max(exp.close_seconds, total)
            exp.sources |= {m.source for m in counted}
            if counted and total >= gt.minutes * 60 and max(m.t for m in counted) >= report - recent:
                exp.exposed, exp.exposed_at = True, report
                break
    return result
