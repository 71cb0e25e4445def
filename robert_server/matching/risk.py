"""Risk evaluation of one registration from its exposures: PROTOCOL.md section 9 ("Risk").

Pure functions of a registration's risk fields and the current time; the worker reads the fields,
calls :func:`evaluate`, and writes the decision back (:mod:`robert_server.registrations`).

- Exposure epochs older than the contagious period (14 days) are dropped.
- The scores of the epochs after ``latest_risk_epoch`` are summed; ``total = 1 - exp(-r0 * sum)``.
- ``total >= risk_threshold`` and the latest exposure within the last 7 days: at risk; ``latest_risk_epoch``
  becomes the current epoch, ``lastContactDate`` the latest exposure's day moved at random by -1, 0 or +1
  day, never in the future and never earlier than a previous value.
- Above the threshold with the latest exposure older than 7 days: counted as
  ``usersAboveRiskThresholdButRetentionPeriodExpired``, not at risk.
- The at-risk flag clears once the last contact date is more than 7 whole days before today
  (:func:`risk_expired`), as the deployed system does.

"Within the last 7 days" counts UTC days, like the flag's reset: a contact on day D raises a risk up to
day D+7 included (a contact 7 days before the report is a risk, 8 days is not), and a randomised
lastContactDate never leaves that window (it would clear the flag at once).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from robert_common.clock import EPOCHS_PER_DAY, SECONDS_PER_DAY, ServiceTime

# Chooses one day offset among the allowed ones; injectable so tests can make the choice certain.
DayPicker = Callable[[Sequence[int]], int]


@dataclass(frozen=True, slots=True)
class RiskParameters:
    r0: float = 0.0071
    risk_threshold: float = 0.1
    contagious_period_days: int = 14
    risk_retention_days: int = 7

    @classmethod
    def from_settings(cls, settings: Any) -> RiskParameters:
        return cls(
            r0=settings.risk_r0,
            risk_threshold=settings.risk_threshold,
            contagious_period_days=settings.contagious_period_days,
            risk_retention_days=settings.risk_retention_days,
        )


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """What an evaluation changes on one registration."""

    expired_epochs: tuple[int, ...]  # exposure epochs to drop (older than the contagious period)
    at_risk: bool
    new_risk: bool  # a risk was found by this evaluation (alert)
    latest_risk_epoch: int
    last_contact_ntp: int | None
    last_risk_scoring_ntp: int | None
    above_threshold_expired: bool  # usersAboveRiskThresholdButRetentionPeriodExpired


def expired_epochs(
    exposures: Mapping[int, float], current_epoch: int, contagious_period_days: int
) -> list[int]:
    """Exposure epochs older than the contagious period (PROTOCOL.md 9)."""
    keep = contagious_period_days * EPOCHS_PER_DAY
    return [e for e in exposures if current_epoch - e > keep]


def aggregate(scores: Sequence[float], r0: float) -> float:
    """``1 - exp(-r0 * sum(scores))`` (PROTOCOL.md 9)."""
    return 1.0 - math.exp(-r0 * sum(scores))


def _midnight(ntp: int) -> int:
    return ntp - ntp % SECONDS_PER_DAY  # NTP day boundaries are UTC midnights (both eras start at 00:00)


def randomized_last_contact(
    exposure_ntp: int,
    now_ntp: int,
    previous_ntp: int | None,
    pick: DayPicker = random.choice,
    retention_days: int = 7,
) -> int:
    """lastContactDate: the exposure's day moved by -1, 0 or +1 day, never after today, never before the
    retention window, never earlier than ``previous_ntp`` (PROTOCOL.md 9). NTP seconds of a UTC midnight."""
    day = _midnight(exposure_ntp)
    today = _midnight(now_ntp)
    oldest = today - retention_days * SECONDS_PER_DAY
    offsets = [d for d in (-1, 0, 1) if oldest <= day + d * SECONDS_PER_DAY <= today] or [0]
    chosen = min(day + pick(offsets) * SECONDS_PER_DAY, today)
    if previous_ntp is not None and previous_ntp > chosen:
        return previous_ntp
    return chosen


def days_before_today(ntp: int, now_ntp: int) -> int:
    """Whole UTC days from the day of ``ntp`` to today."""
    return (_midnight(now_ntp) - _midnight(ntp)) // SECONDS_PER_DAY


def risk_expired(last_contact_ntp: int | None, now_ntp: int, risk_retention_days: int) -> bool:
    """True when the at-risk flag must clear: last contact day more than ``risk_retention_days`` whole days
    before today (PROTOCOL.md 9; the deployed system's rule)."""
    if last_contact_ntp is None:
        return True
    return days_before_today(last_contact_ntp, now_ntp) > risk_retention_days


def evaluate(
    registration: Mapping[str, Any],
    service_time: ServiceTime,
    params: RiskParameters,
    pick: DayPicker = random.choice,
) -> RiskDecision:
    """Evaluate one registration document (fields of :mod:`robert_server.registrations`), PROTOCOL.md 9."""
    now_ntp = service_time.ntp_now()
    current = service_time.epoch_id(now_ntp)
    exposures = {int(k): float(v) for k, v in (registration.get("exposures") or {}).items()}
    expired = expired_epochs(exposures, current, params.contagious_period_days)
    for e in expired:
        del exposures[e]
    latest_risk_epoch = int(registration.get("latest_risk_epoch") or 0)
    last_contact = registration.get("last_contact_ntp")
    at_risk = bool(registration.get("at_risk"))
    last_scoring = registration.get("last_risk_scoring_ntp")
    total = aggregate([s for e, s in exposures.items() if e > latest_risk_epoch], params.r0)
    new_risk = above_expired = False
    if exposures and total >= params.risk_threshold:
        latest_ntp = service_time.epoch_start(max(exposures))
        if days_before_today(latest_ntp, now_ntp) <= params.risk_retention_days:
            new_risk = at_risk = True
            latest_risk_epoch = current
            last_scoring = service_time.epoch_start(current)
            last_contact = randomized_last_contact(
                latest_ntp, now_ntp, last_contact, pick, params.risk_retention_days
            )
        else:
            above_expired = True
    return RiskDecision(
        expired_epochs=tuple(expired),
        at_risk=at_risk,
        new_risk=new_risk,
        latest_risk_epoch=latest_risk_epoch,
        last_contact_ntp=last_contact,
        last_risk_scoring_ntp=last_scoring,
        above_threshold_expired=above_expired,
    )


def today(service_time: ServiceTime) -> dt.date:
    """The UTC day of the service clock (KPI documents are per day)."""
    return service_time.day_of_ntp(service_time.ntp_now())
