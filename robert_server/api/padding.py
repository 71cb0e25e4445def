"""Constant-size answers: a ``padding`` member so that the length of an answer tells nothing of the phone.

An at-risk /status answer carries members a not-at-risk one does not (``lastContactDate``,
``lastRiskScoringDate``, ``declarationToken``), and the signed tokens vary in length with the digits of
their times; a network observer reads the length of the TLS record. So every such answer ends with
``"padding": "000..."``, sized so that the *variable* members plus the padding always take the same
number of bytes: the budget is what the variable members take at their largest (every optional member
present, every time at its widest, tokens signed with the widest claims). Phones ignore members they do not
know, so the member is compatible with the deployed app.

What the padding does not cover, on purpose: members that are the same for every phone at the same moment
(the sealed bundle, whose length follows from the epoch of the poll and ``bundle_days``; the client
``config``), so two phones polling in the same epoch get answers of exactly the same length.
Answers must never be compressed (no ``Content-Encoding``: compression would make their lengths vary
again); the API does not compress, and a proxy in front of it must not either.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from robert_server.tokens import TokenSigner

log = logging.getLogger("robert.api")

PADDING = "padding"
FILLER = "0"
MAX_UNIX = 10**10 - 1  # Unix seconds have 10 digits until the year 2286
MAX_NTP = 10**10 - 1  # NTP seconds have 10 digits until the year 2216
WIDEST_JTI = "f" * 32  # a jti is 32 hex digits (robert_server/tokens.py)


def member_size(name: str, value: Any) -> int:
    """Bytes ``"name":value`` takes in an answer's JSON, with the comma that separates it from another."""
    return len(orjson.dumps(name)) + len(orjson.dumps(value)) + 2


@dataclass(frozen=True, slots=True)
class Shape:
    """The variable members of one kind of answer, and the bytes they take at their largest."""

    budget: int
    names: tuple[str, ...]

    @classmethod
    def of(cls, widest: dict[str, Any]) -> Shape:
        return cls(sum(member_size(k, v) for k, v in widest.items()), tuple(widest))

    def dumps(self, answer: dict[str, Any]) -> bytes:
        """The JSON of ``answer`` (which must have at least one member that is not variable) with a
        padding member: always ``fixed members + budget + len('"padding":""')`` bytes."""
        used = sum(member_size(k, answer[k]) for k in self.names if k in answer)
        room = self.budget - used
        if room < 0:  # a value wider than its maximum: a bound above is wrong, the answer still goes
            log.warning("answer wider than its padding budget", extra={"excess": -room})
            room = 0
        return orjson.dumps({**answer, PADDING: FILLER * room})


def _cached(build: Callable[[TokenSigner], Shape]) -> Callable[[TokenSigner], Shape]:
    """The shape of a signer, built once (its budget signs tokens, so not at every answer)."""
    shapes: weakref.WeakKeyDictionary[TokenSigner, Shape] = weakref.WeakKeyDictionary()

    def get(tokens: TokenSigner) -> Shape:
        shape = shapes.get(tokens)
        if shape is None:
            shape = shapes[tokens] = build(tokens)
        return shape

    return get


@_cached
def status_shape(tokens: TokenSigner) -> Shape:
    """/status (PROTOCOL.md 6): the risk, its dates and the two tokens vary; the bundle and config do not
    (they are the same for every phone of the same epoch)."""
    return Shape.of(
        {
            "riskLevel": 4,
            "lastContactDate": str(MAX_NTP),
            "lastRiskScoringDate": str(MAX_NTP),
            "declarationToken": tokens.declaration_token(
                MAX_UNIX, last_contact_ntp=MAX_NTP, notification_ntp=MAX_NTP, jti=WIDEST_JTI
            ),
            "analyticsToken": tokens.analytics_token(MAX_UNIX),
        }
    )


@_cached
def report_shape(tokens: TokenSigner) -> Shape:
    """/report: the token varies (and a dummy upload's answer has none, see report.py)."""
    return Shape.of({"reportValidationToken": tokens.report_validation_token(MAX_UNIX)})
