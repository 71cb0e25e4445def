"""The scoring algorithm (version 2) of one Contact: PROTOCOL.md section 9.

A pure function of the Contact's valid HELLOs, given as ``(time_collected, rssi)`` pairs
(``timeCollectedOnDevice`` in NTP seconds, ``rssiCalibrated`` in dBm). Its result is the score added to
the exposure of the heard phone for the Contact's epoch; :mod:`robert_server.matching.risk` aggregates.

Where PROTOCOL.md is silent, this follows the deployed system, on purpose, so that the same uploads give
the same risks:

- HELLOs are taken in collection-time order (the deployed system assumes the phone sorted them).
- A HELLO more than 15 minutes after ``t0`` (possible within ``epoch_tolerance``) goes to bucket 14,
  except one in minute 15 exactly, which is dropped: the deployed system's off-by-one, kept for parity.
- An RSSI so low that every ``exp`` underflows gives a mean of -infinity (risk 0), never an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EPOCH_MINUTES = 15  # minute buckets of one epoch (900 s)
RSSI_ERROR_FLOOR = -5  # rssiCalibrated above this is a known phone bug: the HELLO is ignored


@dataclass(frozen=True, slots=True)
class ScoringParameters:
    """Parameters of algorithm version 2 (PROTOCOL.md 9); defaults are the deployed values."""

    rssi_max: int = -35
    p0: float = -66.0
    deltas: tuple[float, ...] = (39.0, 27.0, 23.0, 21.0, 20.0, 15.0)
    softmax_a: float = 4.342
    softmax_b: float = 0.2
    epoch_tolerance: int = 180  # seconds

    @classmethod
    def from_settings(cls, settings: Any) -> ScoringParameters:
        """The parameters named ``scoring_*`` in :class:`robert_common.settings.Settings`."""
        return cls(
            rssi_max=settings.scoring_rssi_max,
            p0=settings.scoring_p0,
            deltas=tuple(settings.scoring_deltas),
            softmax_a=settings.scoring_softmax_a,
            softmax_b=settings.scoring_softmax_b,
            epoch_tolerance=settings.scoring_epoch_tolerance,
        )


DEFAULT_PARAMETERS = ScoringParameters()


def softmax(values: Sequence[float], c: float) -> float:
    """``c * ln(mean(exp(x / c)))``, 0 for an empty list (PROTOCOL.md 9)."""
    if not values:
        return 0.0
    return _softmax_of_sum(sum(math.exp(x / c) for x in values), len(values), c)


def _softmax_of_sum(exp_sum: float, n: int, c: float) -> float:
    """Softmax from a precomputed sum of ``exp(x / c)`` over ``n`` values; -inf when it underflowed."""
    if n == 0:
        return 0.0
    if exp_sum <= 0.0:
        return -math.inf
    return c * math.log(exp_sum / n)


def _minute_buckets(hellos: Sequence[tuple[int, int]], params: ScoringParameters) -> list[list[int]]:
    """RSSIs of the HELLOs per minute after the first one, capped at ``rssi_max`` (PROTOCOL.md 9)."""
    buckets: list[list[int]] = [[] for _ in range(EPOCH_MINUTES)]
    t0 = hellos[0][0]
    rssi_max = params.rssi_max
    for t, rssi in hellos:
        if rssi > RSSI_ERROR_FLOOR:
            continue
        index = (t - t0) // 60
        if index > EPOCH_MINUTES:
            index = EPOCH_MINUTES - 1
        if index < EPOCH_MINUTES:
            buckets[index].append(rssi if rssi < rssi_max else rssi_max)
    return buckets


def score_contact(hellos: Iterable[tuple[int, int]], params: ScoringParameters = DEFAULT_PARAMETERS) -> float:
    """Score of one Contact from its valid HELLOs ``(time_collected, rssi)`` (PROTOCOL.md 9, version 2)."""
    ordered = sorted(hellos)
    if not ordered:
        return 0.0
    if ordered[-1][0] - ordered[0][0] > EPOCH_MINUTES * 60 + params.epoch_tolerance:
        return 0.0  # an over-long contact: its HELLOs cannot all belong to one epoch
    a = params.softmax_a
    buckets = _minute_buckets(ordered, params)
    sums = [sum(math.exp(x / a) for x in b) for b in buckets]
    counts = [len(b) for b in buckets]
    risks: list[float] = []
    kmax = 0
    last_delta = len(params.deltas) - 1
    for k in range(EPOCH_MINUTES):
        if k < EPOCH_MINUTES - 1:  # a two-minute window, except the last minute alone
            n, s = counts[k] + counts[k + 1], sums[k] + sums[k + 1]
        else:
            n, s = counts[k], sums[k]
        if n == 0:
            continue
        kmax = k
        gamma = (_softmax_of_sum(s, n, a) - params.p0) / params.deltas[min(n, last_delta)]
        risks.append(min(max(gamma, 0.0), 1.0))
    return min(softmax(risks, params.softmax_b) * 1.2, 1.0) * kmax


def score_contacts(
    times: np.ndarray,
    rssis: np.ndarray,
    contact: np.ndarray,
    n_contacts: int,
    params: ScoringParameters = DEFAULT_PARAMETERS,
) -> np.ndarray:
    """:func:`score_contact` for a whole batch at once, with numpy (the worker's hot path).

    ``times``, ``rssis``: the valid HELLOs of every contact; ``contact``: the contact number (0 to
    ``n_contacts - 1``) of each HELLO, in non-decreasing order. Returns one score per contact (0 for one
    with no HELLO). Same algorithm, same results as :func:`score_contact` (tested against it).
    """
    out = np.zeros(n_contacts)
    if len(times) == 0:
        return out
    times = np.asarray(times, dtype=np.int64)
    rssis = np.asarray(rssis, dtype=np.int64)
    present, starts, counts = np.unique(contact, return_index=True, return_counts=True)
    t0 = np.minimum.reduceat(times, starts)
    too_long = np.maximum.reduceat(times, starts) - t0 > EPOCH_MINUTES * 60 + params.epoch_tolerance
    slot_of = np.repeat(np.arange(len(present)), counts)  # position of each HELLO's contact in ``present``
    index = (times - np.repeat(t0, counts)) // 60
    index[index > EPOCH_MINUTES] = EPOCH_MINUTES - 1  # the deployed system's overrun rule (module doc)
    keep = (index < EPOCH_MINUTES) & (rssis <= RSSI_ERROR_FLOOR)
    slots = slot_of[keep] * EPOCH_MINUTES + index[keep]
    size = len(present) * EPOCH_MINUTES
    capped = np.minimum(rssis[keep], params.rssi_max).astype(np.float64)
    sums = np.bincount(slots, np.exp(capped / params.softmax_a), size).reshape(-1, EPOCH_MINUTES)
    ns = np.bincount(slots, minlength=size).reshape(-1, EPOCH_MINUTES)
    sums[:, :-1] += sums[:, 1:]  # two-minute windows, except the last minute alone
    ns[:, :-1] += ns[:, 1:]
    used = ns > 0
    with np.errstate(divide="ignore"):
        q = params.softmax_a * np.log(sums / np.maximum(ns, 1))
    deltas = np.asarray(params.deltas, dtype=np.float64)[np.minimum(ns, len(params.deltas) - 1)]
    risks = np.clip((q - params.p0) / deltas, 0.0, 1.0)
    kmax = np.where(used.any(axis=1), EPOCH_MINUTES - 1 - np.argmax(used[:, ::-1], axis=1), 0)
    n_risks = used.sum(axis=1)
    exp_sum = np.where(used, np.exp(risks / params.softmax_b), 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        soft = np.where(n_risks > 0, params.softmax_b * np.log(exp_sum / np.maximum(n_risks, 1)), 0.0)
    scores = np.minimum(soft * 1.2, 1.0) * kmax
    scores[too_long] = 0.0
    out[present] = scores
    return out
