"""What ``/report`` needs from the code service: reserve a code, then confirm or release it.

The flow keeps a failed upload from burning the patient's code (PROTOCOL.md 7, issue 4):

1. ``reserve(code, source)`` atomically takes an unused, valid code for a short while and returns a
   :class:`Reservation` (or ``None`` for every kind of failure: they all look the same to the caller);
2. the contacts are stored durably under ``reservation.report_id``;
3. ``confirm(reservation)`` marks the code used; if storing failed, ``release(reservation)`` frees it.

A crash between 2 and 3 leaves the reservation to expire; a retried upload then stores under the same
``report_id`` (derived from the code), which inserts nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reservation:
    report_id: str  # opaque, stable for a given code; never the code itself
    kind: str  # "short", "long" or "jwt"
    token: str  # identifies this reservation (so a late confirm cannot take another's)


class CodeVerifier(Protocol):
    async def reserve(self, code: str, source: str) -> Reservation | None: ...

    async def confirm(self, reservation: Reservation) -> None: ...

    async def release(self, reservation: Reservation) -> None: ...
