"""Risk evaluation (PROTOCOL.md 9) with hand-computed cases, on a manual clock."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest

from robert_common.clock import SECONDS_PER_DAY, ManualClock, ServiceTime, date_to_ntp, ntp_to_unix
from robert_server.matching.risk import (
    RiskParameters,
    aggregate,
    evaluate,
    randomized_last_contact,
    risk_expired,
)

START = dt.date(2020, 6, 1)
PARAMS = RiskParameters()
DAY = SECONDS_PER_DAY


def at(day: int, hour: int = 12) -> ServiceTime:
    """Service time on service day ``day`` at ``hour`` UTC."""
    ntp = date_to_ntp(START) + day * DAY + hour * 3600
    return ServiceTime(START, ManualClock(ntp_to_unix(ntp)))


def epoch(day: int, hour: int = 12) -> int:
    return day * 96 + hour * 4


def reg(exposures: dict[int, float], **fields: Any) -> dict[str, Any]:
    return {"exposures": {str(k): v for k, v in exposures.items()}, "latest_risk_epoch": 0, **fields}


def zero(options: Any) -> int:
    return 0


def test_aggregate_by_hand() -> None:
    assert aggregate([14.0], 0.0071) == pytest.approx(1 - math.exp(-0.0994))  # 0.0946 < 0.1
    assert aggregate([14.0, 1.0], 0.0071) == pytest.approx(1 - math.exp(-0.1065))
    assert aggregate([14.0, 1.0], 0.0071) == pytest.approx(0.101025, abs=1e-6)
    assert aggregate([], 0.0071) == 0.0


def test_threshold() -> None:
    st = at(30)
    below = evaluate(reg({epoch(29): 14.0}), st, PARAMS, zero)
    assert not below.at_risk and not below.new_risk and not below.above_threshold_expired
    above = evaluate(reg({epoch(29): 14.0, epoch(29, 13): 1.0}), st, PARAMS, zero)
    assert above.at_risk and above.new_risk
    assert above.latest_risk_epoch == st.current_epoch()
    assert above.last_risk_scoring_ntp == st.epoch_start(st.current_epoch())
    assert above.last_contact_ntp == date_to_ntp(START) + 29 * DAY  # the contact day's midnight


@pytest.mark.parametrize(
    ("days_before", "hour", "at_risk"),
    [(1, 12, True), (6, 12, True), (7, 23, True), (7, 0, True), (8, 23, False), (9, 12, False)],
)
def test_seven_day_window_in_days(days_before: int, hour: int, at_risk: bool) -> None:
    st = at(30, hour=1)
    d = evaluate(reg({epoch(30 - days_before, hour): 20.0}), st, PARAMS, zero)
    assert d.at_risk is at_risk
    assert d.above_threshold_expired is (not at_risk)


def test_scores_before_latest_risk_epoch_do_not_count_again() -> None:
    st = at(30)
    d = evaluate(reg({epoch(28): 20.0}, latest_risk_epoch=epoch(29)), st, PARAMS, zero)
    assert not d.new_risk and d.latest_risk_epoch == epoch(29)


def test_old_epochs_are_dropped_and_do_not_count() -> None:
    st = at(30)
    old, kept = epoch(30, 12) - 14 * 96 - 1, epoch(30, 12) - 14 * 96
    d = evaluate(reg({old: 50.0, kept: 1.0}), st, PARAMS, zero)
    assert d.expired_epochs == (old,)
    assert not d.at_risk


def test_randomized_last_contact_stays_in_allowed_days() -> None:
    now = date_to_ntp(START) + 30 * DAY + 3600
    contact = date_to_ntp(START) + 27 * DAY + 5000
    seen = {randomized_last_contact(contact, now, None) for _ in range(200)}
    midnight = date_to_ntp(START) + 27 * DAY
    assert seen == {midnight - DAY, midnight, midnight + DAY}


def test_randomized_last_contact_never_in_the_future() -> None:
    now = date_to_ntp(START) + 30 * DAY + 3600
    today = date_to_ntp(START) + 30 * DAY
    seen = {randomized_last_contact(now - 600, now, None) for _ in range(100)}
    assert seen == {today - DAY, today}
    assert randomized_last_contact(now - 600, now, None, lambda o: max(o)) == today


def test_randomized_last_contact_never_earlier_than_before() -> None:
    now = date_to_ntp(START) + 30 * DAY
    previous = date_to_ntp(START) + 28 * DAY
    assert randomized_last_contact(previous - DAY, now, previous, lambda o: -1) == previous


def test_risk_clears_after_seven_whole_days() -> None:
    contact = date_to_ntp(START) + 20 * DAY
    assert not risk_expired(contact, contact + 7 * DAY + 23 * 3600, 7)
    assert risk_expired(contact, contact + 8 * DAY, 7)
    assert risk_expired(None, contact, 7)


def test_no_exposure_no_risk_and_flags_kept() -> None:
    st = at(30)
    d = evaluate(reg({}, at_risk=True, last_contact_ntp=123), st, PARAMS, zero)
    assert d.at_risk and not d.new_risk and d.last_contact_ntp == 123


def test_randomized_last_contact_stays_in_the_retention_window() -> None:
    now = date_to_ntp(START) + 30 * DAY + 3600
    edge = date_to_ntp(START) + 23 * DAY  # 7 days before today: -1 would clear the risk at once
    seen = {randomized_last_contact(edge + 5000, now, None) for _ in range(100)}
    assert seen == {edge, edge + DAY}
