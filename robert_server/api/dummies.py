"""Dummy uploads (``"dummy": true`` in a /report body): when to answer them.

Apps send fake /report requests (as DP-3T and the Corona-Warn-App do) so that a network observer cannot
tell who uploaded. A dummy is answered like a real upload in everything an observer sees: the same
status (200), the same answer length (robert_server/api/padding.py), and an answer time drawn from the
times of real uploads: this process keeps the answer times of its most recent successful real uploads,
by size class of the body (factors of 16: up to 1 KiB, 16 KiB, 256 KiB, 4 MiB ...), and a dummy is
answered when a time sampled from them has passed since its request arrived.

Why a reservoir of real times and not a configured distribution: a real upload's time follows the
database's load of the moment and grows with the size of the body; a fixed distribution would drift from
it exactly when the system is busy. Only the most recent times are kept (:data:`PER_CLASS`,
:data:`TOTAL`) so that the dummies follow the load as it changes (a larger reservoir lagged behind it
in tests/robert_server/api/test_privacy_dummy.py). The size classes keep a large dummy from being
answered as fast as a small real one. Until a class has :data:`MIN_CLASS_SAMPLES` samples the whole
reservoir is used; before the first real upload of this process there is nothing to imitate, and a dummy
waits a time drawn uniformly from :data:`COLD_START_SECONDS` (the order of a real upload's time on an
idle system). Each process has its own reservoir.
"""

from __future__ import annotations

import random
from collections import deque

PER_CLASS = 16  # recent real answer times kept per size class
TOTAL = 32  # and over every class
MIN_CLASS_SAMPLES = 8
COLD_START_SECONDS = (0.02, 0.1)

_random = random.SystemRandom()  # an observer must not predict the next draw


def size_class(body_bytes: int) -> int:
    """The class of a body length: 0 up to 1 KiB, then one class per factor of 16 (apps pad their
    bodies to powers of two, so a class holds four of their sizes)."""
    return max(max(body_bytes - 1, 0).bit_length() - 10 + 3, 0) // 4


class LatencyReservoir:
    """Answer times (seconds) of recent successful real uploads, by size class of their body."""

    def __init__(self) -> None:
        self._by_class: dict[int, deque[float]] = {}
        self._all: deque[float] = deque(maxlen=TOTAL)

    def record(self, body_bytes: int, seconds: float) -> None:
        cls = size_class(body_bytes)
        samples = self._by_class.get(cls)
        if samples is None:
            samples = self._by_class[cls] = deque(maxlen=PER_CLASS)
        samples.append(seconds)
        self._all.append(seconds)

    def sample(self, body_bytes: int) -> float:
        """A time to answer a dummy of ``body_bytes`` in (seconds after its request arrived)."""
        samples = self._by_class.get(size_class(body_bytes))
        if samples is not None and len(samples) >= MIN_CLASS_SAMPLES:
            return _random.choice(samples)
        if self._all:
            return _random.choice(self._all)
        return _random.uniform(*COLD_START_SECONDS)
