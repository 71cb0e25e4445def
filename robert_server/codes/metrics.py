"""Prometheus metrics of the code service. Failure reasons go here, and only here (issue 4)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

VERIFICATIONS = Counter(
    "robert_codes_verifications_total",
    "Code reservations at /report by kind and result (reserved, or the reason of the refusal)",
    ["kind", "result"],
)
CONFIRMED = Counter("robert_codes_confirmed_total", "Codes consumed by a stored report", ["kind"])
RELEASED = Counter("robert_codes_released_total", "Reservations released after a failed upload", ["kind"])
ISSUED = Counter("robert_codes_issued_total", "Codes issued", ["kind"])
REVOKED = Counter("robert_codes_revoked_total", "Codes revoked by an issuer")
PURGED = Counter("robert_codes_purged_total", "Code records purged", ["state"])
ISSUER_AUTH_FAILURES = Counter("robert_codes_issuer_auth_failures_total", "Refused code-issuer calls")

RATE_LIMIT_FAILURES = Gauge(
    "robert_codes_rate_limit_failures", "Failed code attempts a source may make per window before lock-out"
)
RATE_LIMIT_WINDOW = Gauge("robert_codes_rate_limit_window_seconds", "Window of the failed-attempt count")
RATE_LIMIT_LOCKOUT = Gauge("robert_codes_rate_limit_lockout_seconds", "Lock-out of a source over the limit")
LOCKOUTS = Counter("robert_codes_lockouts_total", "Sources locked out for too many failed code attempts")
LOCKED_OUT_ATTEMPTS = Counter(
    "robert_codes_locked_out_attempts_total", "Code attempts refused because their source is locked out"
)
GLOBAL_LIMITED = Counter(
    "robert_codes_global_limited_total",
    "Short-code attempts refused because the global budget of failed checks of the window is spent",
)
