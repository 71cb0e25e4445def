"""The BLE model: deterministic for a seed, weaker with distance, pockets and bodies, gaps in scans."""

from __future__ import annotations

import random
import statistics

from simulator.ble import BleParams, mean_rssi, receptions, sample_rssi

PARAMS = BleParams()


def hear(distance: float, seed: int = 1, minutes: int = 30, **params: float) -> list:
    p = BleParams(**params)
    return list(receptions(seed, "a", "b", 1000, minutes * 60, distance, p, {"a": 0.5, "b": 0.5}))


def test_path_loss_mean() -> None:
    assert mean_rssi(1.0, PARAMS) == PARAMS.tx_power_1m_dbm
    # log-distance: 10 * n dB per decade
    assert round(mean_rssi(10.0, PARAMS) - mean_rssi(1.0, PARAMS), 6) == -10 * PARAMS.path_loss_exponent
    assert mean_rssi(0.0, PARAMS) == mean_rssi(0.1, PARAMS)  # clamped, no log(0)


def test_same_seed_same_receptions_other_seed_different() -> None:
    assert hear(1.5, seed=5) == hear(1.5, seed=5)
    assert hear(1.5, seed=5) != hear(1.5, seed=6)


def test_rssi_decreases_with_distance_on_average() -> None:
    means = [statistics.mean(r.rssi for r in hear(d)) for d in (0.5, 1, 2, 4, 8)]
    assert means == sorted(means, reverse=True)
    assert means[0] - means[-1] > 15


def test_attenuations_and_noise() -> None:
    rng = random.Random(0)
    clear = statistics.mean(sample_rssi(2, PARAMS, rng) for _ in range(2000))
    body = statistics.mean(sample_rssi(2, PARAMS, rng, body=True) for _ in range(2000))
    pockets = statistics.mean(sample_rssi(2, PARAMS, rng, pockets=2) for _ in range(2000))
    assert abs(clear - mean_rssi(2, PARAMS)) < 0.5
    assert abs((clear - body) - PARAMS.body_attenuation_db) < 0.5
    assert abs((clear - pockets) - 2 * PARAMS.pocket_attenuation_db) < 0.5
    quiet = BleParams(noise_sd_db=0)
    assert sample_rssi(3, quiet, rng) == mean_rssi(3, quiet)


def test_both_directions_at_the_hello_rate_within_the_encounter() -> None:
    got = hear(1.0, minutes=10, scan_gap_probability=0, packet_loss=0)
    for emitter in ("a", "b"):
        times = [r.t for r in got if r.emitter == emitter]
        assert all(1000 <= t < 1000 + 600 for t in times)
        assert abs(len(times) - 600 / PARAMS.hello_interval_s) <= 3
        assert all(r.receiver != emitter for r in got if r.emitter == emitter)


def test_scan_gaps_loss_and_sensitivity_drop_hellos() -> None:
    full = len(hear(1.0, scan_gap_probability=0, packet_loss=0))
    assert len(hear(1.0, scan_gap_probability=0.5, packet_loss=0)) < 0.7 * full
    assert len(hear(1.0, scan_gap_probability=0, packet_loss=0.5)) < 0.7 * full
    assert hear(5000.0) == []  # far below the sensitivity
    assert len(hear(150.0)) < len(hear(30.0)) < len(hear(2.0))  # fading into the noise floor
