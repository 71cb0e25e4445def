"""Ground truth: time within the distance of diagnosed phones, over the look-back, recent enough."""

from __future__ import annotations

from simulator.groundtruth import ground_truth
from simulator.scenario import parse_scenario


def scenario(encounters: list[dict], diagnoses: list[dict], **extra: object):
    raw = {
        "seed": 1,
        "ble": {"distance_jitter": 0},
        "population": [{"name": n} for n in ("d", "x", "y", "late")] + [{"name": "newbie", "joins_day": 1}],
        "encounters": encounters,
        "diagnoses": diagnoses,
    }
    raw.update(extra)
    return parse_scenario(raw)


def enc(who: list[str], minutes: float, distance: float, day: int = 0, at: str = "10:00") -> dict:
    return {"who": who, "day": day, "at": at, "minutes": minutes, "distance_m": distance}


def test_close_and_long_enough_is_exposed_others_not() -> None:
    sc = scenario(
        [enc(["d", "x"], 20, 1.0), enc(["d", "y"], 60, 3.0), enc(["x", "late"], 60, 1.0)],
        [{"who": "d", "day": 1}],
    )
    gt = ground_truth(sc)
    assert gt["x"].exposed and gt["x"].close_seconds == 20 * 60 and gt["x"].sources == {"d"}
    assert not gt["y"].exposed and gt["y"].close_seconds == 0  # far away
    assert not gt["late"].exposed  # met x, who was never diagnosed
    assert not gt["d"].exposed  # nobody diagnosed was close to d but d itself


def test_threshold_is_cumulative_over_encounters() -> None:
    short = [enc(["d", "x"], 10, 1.0)]
    assert not ground_truth(scenario(short, [{"who": "d", "day": 2}]))["x"].exposed
    twice = short + [enc(["d", "x"], 10, 1.0, day=1)]
    gt = ground_truth(scenario(twice, [{"who": "d", "day": 2}]))
    assert gt["x"].exposed and gt["x"].close_seconds == 20 * 60


def test_contact_after_the_report_or_too_old_does_not_count() -> None:
    after = ground_truth(scenario([enc(["d", "x"], 60, 1.0, day=2)], [{"who": "d", "day": 1}], days=3))
    assert not after["x"].exposed
    old = ground_truth(scenario([enc(["d", "x"], 60, 1.0, day=0)], [{"who": "d", "day": 9}]))
    assert not old["x"].exposed  # latest close contact more than 7 days before the report
    longer = ground_truth(
        scenario(
            [enc(["d", "x"], 60, 1.0, day=0)], [{"who": "d", "day": 9}], ground_truth={"recent_days": 10}
        )
    )
    assert longer["x"].exposed


def test_only_time_with_the_app_installed_counts() -> None:
    sc = scenario([enc(["d", "newbie"], 60, 1.0, day=0, at="23:50")], [{"who": "d", "day": 2}], days=3)
    gt = ground_truth(sc)
    assert gt["newbie"].close_seconds == 50 * 60 and gt["newbie"].exposed


def test_deterministic() -> None:
    raw_enc = [enc(["d", "x"], 30, 2.0), enc(["d", "y"], 30, 2.0)]
    one = ground_truth(scenario(raw_enc, [{"who": "d", "day": 1}], ble={"distance_jitter": 0.3}))
    two = ground_truth(scenario(raw_enc, [{"who": "d", "day": 1}], ble={"distance_jitter": 0.3}))
    assert one == two
    assert 0 < one["x"].close_seconds < 30 * 60  # jitter puts some minutes beyond 2 m
