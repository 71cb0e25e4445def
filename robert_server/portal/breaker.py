"""A circuit breaker in front of the identity provider.

Closed: calls go through; ``failures`` consecutive failures open it. Open: calls are refused at once
(the user is told and offered the fallback login) for ``open_seconds``. Then half-open: exactly one
call (the probe) goes through while the others are still refused; its success closes the breaker, its
failure opens it again for twice as long (capped). So a provider that comes back is not hit by every
waiting browser at once: the surge that followed Pro Santé Connect's restoration in August 2021.
"""

from __future__ import annotations

from robert_common.clock import Clock

MAX_OPEN_FACTOR = 8  # an open period grows up to 8 times the configured one


class CircuitBreaker:
    def __init__(self, clock: Clock, failures: int, open_seconds: float) -> None:
        self.clock = clock
        self.threshold = failures
        self.open_seconds = open_seconds
        self._failures = 0
        self._open_until: float | None = None  # None: closed
        self._open_for = open_seconds
        self._probing = False

    @property
    def state(self) -> str:
        if self._open_until is None:
            return "closed"
        return "half-open" if self.clock.now() >= self._open_until else "open"

    def allow(self) -> bool:
        """May a call go to the provider now? In half-open, only the first caller gets True."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._open_until = None
        self._open_for = self.open_seconds
        self._probing = False

    def failure(self) -> None:
        if self._probing:  # the probe failed: back to open, for longer
            self._probing = False
            self._open_for = min(self._open_for * 2, self.open_seconds * MAX_OPEN_FACTOR)
            self._open_until = self.clock.now() + self._open_for
            return
        self._failures += 1
        if self._failures >= self.threshold and self._open_until is None:
            self._open_until = self.clock.now() + self._open_for
