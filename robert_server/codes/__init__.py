"""Submission codes (issue 4, PROTOCOL.md 7): issuing over gRPC, storage, and one-time use at /report.

``make_verifier(db, settings, clock)`` is what the phone API needs; everything else serves the issuers
(``robert codes serve``, ``robert codes issue-long``) and the operators (``robert issuers``, purge).
"""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock
from robert_common.settings import Settings

from .verifier import CodeVerifier, Reservation, StoredCodeVerifier


def make_verifier(db: AsyncDatabase, settings: Settings, clock: Clock) -> CodeVerifier:
    """The code verifier ``/report`` uses: reserve, then confirm or release (see :mod:`.verifier`)."""
    return StoredCodeVerifier(db, settings, clock)


__all__ = ["CodeVerifier", "Reservation", "StoredCodeVerifier", "make_verifier"]
