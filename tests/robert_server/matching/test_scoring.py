"""Scoring algorithm v2 (PROTOCOL.md 9) against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from robert_server.matching.scoring import ScoringParameters, score_contact, softmax

T0 = 3_800_000_000  # some NTP second


def per_minute(rssi: int, minutes: int = 15, per_min: int = 1, base: int = T0) -> list[tuple[int, int]]:
    """HELLOs spread evenly over ``minutes`` minutes, ``per_min`` in each."""
    step = 60 // per_min
    return [(base + 60 * m + step * i, rssi) for m in range(minutes) for i in range(per_min)]


def test_softmax_by_hand() -> None:
    assert softmax([], 4.342) == 0.0
    assert softmax([-50.0, -50.0], 4.342) == pytest.approx(-50.0)
    # c * ln((e^(1/c) + e^(3/c)) / 2) with c = 1: ln((e + e^3) / 2)
    assert softmax([1.0, 3.0], 1.0) == pytest.approx(math.log((math.e + math.e**3) / 2))


def test_empty_contact_scores_zero() -> None:
    assert score_contact([]) == 0.0


def test_single_minute_scores_zero() -> None:
    # kmax = 0: every HELLO in minute 0
    assert score_contact([(T0, -40), (T0 + 30, -40), (T0 + 59, -40)]) == 0.0


def test_constant_rssi_one_per_minute_by_hand() -> None:
    # windows k < 14 hold 2 HELLOs at -50: q = -50, n = 2, gamma = (-50 + 66) / deltas[2] = 16/23
    # the last window holds 1 HELLO: gamma = 16 / deltas[1] = 16/27; kmax = 14
    risks = [16 / 23] * 14 + [16 / 27]
    expected = min(0.2 * math.log(sum(math.exp(r / 0.2) for r in risks) / 15) * 1.2, 1.0) * 14
    assert expected == pytest.approx(11.5955, abs=1e-4)
    assert score_contact(per_minute(-50)) == pytest.approx(expected, rel=1e-12)


def test_close_contact_for_a_whole_epoch_scores_kmax() -> None:
    # RSSI -35: gamma = 31/23 > 1, clamped to 1; every risk 1, softmax 1, * 1.2 capped at 1 -> score = kmax
    assert score_contact(per_minute(-35)) == pytest.approx(14.0)
    assert score_contact(per_minute(-35, minutes=5)) == pytest.approx(4.0)


def test_far_contact_scores_zero() -> None:
    assert score_contact(per_minute(-80)) == 0.0  # gamma < 0 everywhere


def test_count_above_last_delta_uses_last_delta() -> None:
    # 4 HELLOs a minute at -60: windows of 8 use deltas[5] = 15 (gamma 0.4), the last one deltas[4] = 20 (0.3)
    risks = [6 / 15] * 14 + [6 / 20]
    expected = min(0.2 * math.log(sum(math.exp(r / 0.2) for r in risks) / 15) * 1.2, 1.0) * 14
    assert score_contact(per_minute(-60, per_min=4)) == pytest.approx(expected, rel=1e-12)


def test_rssi_above_minus_5_is_ignored() -> None:
    base = per_minute(-50)
    noisy = base + [(T0 + 60 * m + 10, -4) for m in range(15)] + [(T0 + 20, 0), (T0 + 80, 20)]
    assert score_contact(noisy) == score_contact(base)
    # only bad RSSIs: nothing in the buckets
    assert score_contact([(T0 + 60 * m, -1) for m in range(15)]) == 0.0


def test_rssi_minus_5_counts_and_is_capped_at_rssi_max() -> None:
    assert score_contact(per_minute(-5)) == score_contact(per_minute(-35))
    assert score_contact(per_minute(-20)) == score_contact(per_minute(-35))


def test_over_long_contact_scores_zero() -> None:
    hellos = per_minute(-35) + [(T0 + 15 * 60 + 180 + 1, -35)]  # last - first = 1081 s > 900 + 180
    assert score_contact(hellos) == 0.0


def test_overrun_within_tolerance_goes_to_last_bucket() -> None:
    # last - first = 1080 s: minute 18 -> bucket 14 (same score as a HELLO at minute 14)
    base = per_minute(-50, minutes=14)  # minutes 0..13
    assert score_contact(base + [(T0 + 1080, -50)]) == score_contact(base + [(T0 + 14 * 60, -50)])


def test_minute_15_is_dropped_like_the_deployed_system() -> None:
    base = per_minute(-50)
    assert score_contact(base + [(T0 + 15 * 60 + 5, -35)]) == score_contact(base)


def test_unordered_hellos_score_as_ordered() -> None:
    hellos = per_minute(-50) + per_minute(-60, minutes=7)
    assert score_contact(list(reversed(hellos))) == score_contact(sorted(hellos))


def test_underflowing_rssi_gives_zero_not_an_error() -> None:
    # exp(-32768 / 4.342) underflows to 0: mean -inf, risk 0
    assert score_contact(per_minute(-32768)) == 0.0
    mixed = per_minute(-35, minutes=3) + [(T0 + 60 * m, -32768) for m in range(3, 15)]
    # windows 0, 1: -35 twice (risk 1); window 2: -35 and nothing, q = -35 + a ln(1/2) = -38.0 (risk 1);
    # windows 3..14: -inf (risk 0); kmax = 14
    risks = [1.0] * 3 + [0.0] * 12
    expected = min(0.2 * math.log(sum(math.exp(r / 0.2) for r in risks) / 15) * 1.2, 1.0) * 14
    assert score_contact(mixed) == pytest.approx(expected, rel=1e-12)


def test_time_wraparound_of_16_bits_does_not_matter() -> None:
    # scoring uses timeCollectedOnDevice (32 bits): a contact across a 65 536 s boundary scores the same
    wrap = 65_536 * 57_983  # a multiple of 65 536 near T0
    across = per_minute(-50, base=wrap - 7 * 60 - 13)
    assert score_contact(across) == score_contact(per_minute(-50))


def test_parameters_are_used() -> None:
    params = ScoringParameters(p0=-100.0, deltas=(10.0,))  # every gamma clamps to 1
    assert score_contact(per_minute(-80), params) == pytest.approx(14.0)
    assert score_contact(per_minute(-35), ScoringParameters(epoch_tolerance=0)) == pytest.approx(14.0)
    too_long = per_minute(-35) + [(T0 + 901, -35)]
    assert score_contact(too_long, ScoringParameters(epoch_tolerance=0)) == 0.0


def _batch(contacts: list[list[tuple[int, int]]]) -> list[float]:
    import numpy as np

    from robert_server.matching.scoring import score_contacts

    times = np.array([t for c in contacts for t, _ in c], dtype=np.int64)
    rssis = np.array([r for c in contacts for _, r in c], dtype=np.int64)
    index = np.repeat(np.arange(len(contacts)), [len(c) for c in contacts])
    return list(score_contacts(times, rssis, index, len(contacts)))


def test_batch_scoring_equals_the_reference_on_the_edge_cases() -> None:
    cases = [
        [],
        [(T0, -40)],
        per_minute(-50),
        per_minute(-35),
        per_minute(-80),
        per_minute(-60, per_min=4),
        per_minute(-50) + [(T0 + 60 * m + 10, -4) for m in range(15)],
        [(T0 + 60 * m, -1) for m in range(15)],
        per_minute(-35) + [(T0 + 15 * 60 + 180 + 1, -35)],
        per_minute(-50, minutes=14) + [(T0 + 1080, -50)],
        per_minute(-50) + [(T0 + 15 * 60 + 5, -35)],
        list(reversed(per_minute(-50) + per_minute(-60, minutes=7))),
        per_minute(-32768),
        per_minute(-35, minutes=3) + [(T0 + 60 * m, -32768) for m in range(3, 15)],
    ]
    assert _batch(cases) == pytest.approx([score_contact(c) for c in cases], rel=1e-12, abs=1e-12)


def test_batch_scoring_equals_the_reference_on_random_contacts() -> None:
    import random

    rng = random.Random(7)
    cases = []
    for _ in range(300):
        n = rng.randint(0, 120)
        span = rng.choice([60, 600, 900, 1080, 1100])
        t0 = rng.randint(0, 2**32 - 2000)
        cases.append([(t0 + rng.randint(0, span), rng.randint(-110, 5)) for _ in range(n)])
    assert _batch(cases) == pytest.approx([score_contact(c) for c in cases], rel=1e-9, abs=1e-12)
