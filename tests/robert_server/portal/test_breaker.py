"""The circuit breaker in front of the identity provider: fail fast while open, one probe at a time."""

from __future__ import annotations

from robert_common.clock import ManualClock
from robert_server.portal.breaker import MAX_OPEN_FACTOR, CircuitBreaker


def test_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(ManualClock(1000.0), failures=3, open_seconds=30)
    b.failure()
    b.failure()
    b.success()  # a success in between resets the count
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = ManualClock(1000.0)
    b = CircuitBreaker(clock, failures=1, open_seconds=30)
    b.failure()
    clock.advance(29)
    assert not b.allow()
    clock.advance(1)
    assert b.state == "half-open"
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # everyone else still waits: no storm at restoration
    b.success()
    assert b.state == "closed" and b.allow() and b.allow()


def test_a_failed_probe_opens_for_longer_up_to_a_cap() -> None:
    clock = ManualClock(1000.0)
    b = CircuitBreaker(clock, failures=1, open_seconds=10)
    b.failure()
    waits = []
    for _ in range(6):
        start = clock.now()
        while not b.allow():
            clock.advance(1)
        waits.append(clock.now() - start)
        b.failure()  # the probe fails
    assert waits == [10, 20, 40, 80, 10 * MAX_OPEN_FACTOR, 10 * MAX_OPEN_FACTOR]
