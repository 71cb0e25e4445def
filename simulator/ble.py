"""The BLE encounter model: which HELLOs a phone hears from another, and with what RSSI.

Each phone broadcasts a HELLO (PROTOCOL.md 4) every ``hello_interval_s`` seconds (with jitter), built
from its EBID of the current epoch. A nearby phone hears it when its scanner is on and the signal is
above its sensitivity. The calibrated RSSI follows the log-distance path-loss model::

    rssi = tx_power_1m_dbm - 10 * path_loss_exponent * log10(d / 1 m)
           - body_attenuation_db   (a body blocks the line of sight, drawn per minute)
           - pocket_attenuation_db (per phone in a pocket or bag, drawn per minute)
           + N(0, noise_sd_db)

People move: the distance of a pair varies minute by minute around the encounter's distance
(``d * exp(N(0, distance_jitter))``). The same per-minute distances feed the ground truth
(simulator/groundtruth.py), so "exposed" and "heard" describe the same encounter. Scanners miss whole
minutes at times (``scan_gap_probability``: OS throttling, background limits) and single packets
(``packet_loss``). Everything is drawn from generators seeded by the scenario seed and the encounter,
so the same scenario gives the same receptions whatever order encounters are processed in.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

MIN_DISTANCE_M = 0.1  # below this the path-loss model means nothing: phones touching


class BleParams(BaseModel):
    """Parameters of the BLE model; a scenario's ``ble:`` mapping may set any of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hello_interval_s: float = Field(default=5.0, ge=0.5, le=300)
    interval_jitter_s: float = Field(default=0.5, ge=0)
    tx_power_1m_dbm: float = Field(default=-50.0, ge=-100, le=0)
    path_loss_exponent: float = Field(default=2.0, ge=1.0, le=6.0)
    noise_sd_db: float = Field(default=4.0, ge=0)
    body_attenuation_db: float = Field(default=5.0, ge=0)
    body_probability: float = Field(default=0.3, ge=0, le=1)
    pocket_attenuation_db: float = Field(default=7.0, ge=0)
    sensitivity_dbm: float = Field(default=-95.0, le=0)
    scan_gap_probability: float = Field(default=0.05, ge=0, le=1)
    packet_loss: float = Field(default=0.1, ge=0, le=1)
    distance_jitter: float = Field(default=0.15, ge=0, le=2)


@dataclass(frozen=True, slots=True)
class Reception:
    """``receiver`` heard the HELLO ``emitter`` broadcast at ``t`` (seconds after the simulation start)."""

    emitter: str
    receiver: str
    t: float
    rssi: int


def mean_rssi(distance_m: float, params: BleParams) -> float:
    """Calibrated RSSI at ``distance_m`` in line of sight, no pocket, no noise (log-distance path loss)."""
    d = max(distance_m, MIN_DISTANCE_M)
    return params.tx_power_1m_dbm - 10.0 * params.path_loss_exponent * math.log10(d)


def sample_rssi(
    distance_m: float, params: BleParams, rng: random.Random, *, body: bool = False, pockets: int = 0
) -> float:
    """One RSSI draw: path loss, body blocking, ``pockets`` phones (0, 1 or 2) in a pocket, noise."""
    rssi = mean_rssi(distance_m, params)
    if body:
        rssi -= params.body_attenuation_db
    rssi -= pockets * params.pocket_attenuation_db
    return rssi + rng.gauss(0.0, params.noise_sd_db)


def encounter_rng(seed: int, kind: str, a: str, b: str, start: int) -> random.Random:
    """A generator of its own for one encounter and one use, independent of processing order."""
    return random.Random(f"{seed}:{kind}:{a}:{b}:{start}")


def distance_trace(
    seed: int, a: str, b: str, start: int, duration: int, distance_m: float, params: BleParams
) -> list[tuple[int, int, float]]:
    """Per-minute distances of one encounter: ``(minute start, seconds in that minute, distance)``."""
    rng = encounter_rng(seed, "trace", a, b, start)
    out = []
    for offset in range(0, duration, 60):
        seconds = min(60, duration - offset)
        d = (
            distance_m * math.exp(rng.gauss(0.0, params.distance_jitter))
            if params.distance_jitter
            else distance_m
        )
        out.append((start + offset, seconds, max(d, MIN_DISTANCE_M)))
    return out


def receptions(
    seed: int,
    a: str,
    b: str,
    start: int,
    duration: int,
    distance_m: float,
    params: BleParams,
    pocket: dict[str, float],
) -> Iterator[Reception]:
    """Every HELLO heard during one encounter of ``a`` and ``b``, both ways, in time order per direction.

    ``pocket`` gives each phone's fraction of the time in a pocket. Times are seconds after the
    simulation start; the caller turns each into a HELLO with the emitter's EBID of that epoch.
    """
    trace = distance_trace(seed, a, b, start, duration, distance_m, params)
    rng = encounter_rng(seed, "ble", a, b, start)
    minute_state = []  # per minute: body blocking, a in pocket, b in pocket, a scanning, b scanning
    for _ in trace:
        minute_state.append(
            (
                rng.random() < params.body_probability,
                rng.random() < pocket.get(a, 0.0),
                rng.random() < pocket.get(b, 0.0),
                rng.random() >= params.scan_gap_probability,
                rng.random() >= params.scan_gap_probability,
            )
        )
    for emitter, receiver, rx_index in ((a, b, 4), (b, a, 3)):
        t = start + rng.uniform(0.0, params.hello_interval_s)  # phase of the emitter's broadcasts
        end = start + duration
        while t < end:
            minute = int((t - start) // 60)
            _, _, d = trace[minute]
            state = minute_state[minute]
            if state[rx_index] and rng.random() >= params.packet_loss:
                pockets = int(state[1]) + int(state[2])
                rssi = sample_rssi(d, params, rng, body=state[0], pockets=pockets)
                if rssi >= params.sensitivity_dbm:
                    yield Reception(emitter, receiver, t, round(rssi))
            jitter = rng.uniform(-params.interval_jitter_s, params.interval_jitter_s)
            t += max(0.1, params.hello_interval_s + jitter)
