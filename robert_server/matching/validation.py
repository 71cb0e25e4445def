"""Contacts to per-epoch scores: the ``ValidateContacts`` call and what its verdicts mean (PROTOCOL.md 8).

The crypto service checks each uploaded contact (steps 1 to 4) and answers a :class:`ContactStatus` per
contact and a :class:`HelloVerdict` per HELLO of a valid one. Here the valid HELLOs are scored
(:mod:`~robert_server.matching.scoring`), contacts of another country are set aside for forwarding, and every
rejected HELLO is counted under its KPI reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robert_server.crypto_client import (
    ContactResult,
    ContactStatus,
    ContactToValidate,
    CryptoClient,
    HelloVerdict,
)
from robert_server.matching.context import MatchingConfig
from robert_server.matching.scoring import ScoringParameters, score_contacts

# KPI counter of the HELLOs of a rejected contact, by ContactStatus; of a rejected HELLO, by HelloVerdict.
CONTACT_REJECTION = {
    ContactStatus.FOREIGN_COUNTRY: "hellosRejectedForeignCountry",
    ContactStatus.UNDECRYPTABLE: "hellosRejectedUndecryptable",
    ContactStatus.UNKNOWN_IDENTITY: "hellosRejectedUnknownIdentity",
    ContactStatus.MALFORMED: "hellosRejectedMalformed",
}
HELLO_REJECTION = {
    HelloVerdict.BAD_MAC: "hellosRejectedBadMac",
    HelloVerdict.TIME_MISMATCH: "hellosRejectedTimeMismatch",
    HelloVerdict.BAD_EPOCH: "hellosRejectedBadEpoch",
}

Scores = dict[bytes, dict[int, float]]  # {id_a: {epoch_id: score}}
Foreign = tuple[int, int, dict[str, Any]]  # (index in the batch, country code, packed contact)


@dataclass
class BatchScores:
    """What one batch of contacts gives: exposure scores, contacts to forward, KPI counters."""

    scores: Scores = field(default_factory=dict)
    foreign: list[Foreign] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)


async def validate(
    crypto: CryptoClient, config: MatchingConfig, packed: Sequence[dict[str, Any]]
) -> list[ContactResult]:
    """ONE ``ValidateContacts`` call for packed contacts (:mod:`robert_server.contacts`) of any number of
    batches: one result per contact, in order. Raises :class:`~robert_server.crypto_client.CryptoError`."""
    return await crypto.validate_contacts(
        [ContactToValidate(c["ebid"], c["ecc"], c["t"], c["th"], c["mac"]) for c in packed],
        server_country_code=config.country_code,
        hello_tolerance=config.hello_tolerance,
        deadline=config.validate_timeout,
    )


def score_batch(
    packed: Sequence[dict[str, Any]], results: Sequence[ContactResult], params: ScoringParameters
) -> BatchScores:
    """Scores ``{id_a: {epoch: score}}``, foreign contacts and KPI counters of one validated batch.

    The valid HELLOs of every valid contact are scored together (:func:`score_contacts`)."""
    out = BatchScores()
    valid: list[tuple[dict[str, Any], ContactResult]] = []
    for i, (c, r) in enumerate(zip(packed, results, strict=True)):
        out.counters["hellosProcessed"] += c["n"]
        if r.status == ContactStatus.VALID and len(r.verdicts) == c["n"]:
            valid.append((c, r))
            continue
        # A "valid" contact with a verdict count that does not match its HELLOs is malformed.
        out.counters[CONTACT_REJECTION.get(r.status, "hellosRejectedMalformed")] += c["n"]
        if r.status == ContactStatus.FOREIGN_COUNTRY:
            out.counters["contactsForeign"] += 1
            out.foreign.append((i, r.country_code, c))
    out.counters["contactsProcessed"] = len(packed)
    if valid:
        _score_valid(valid, params, out)
    out.counters = +out.counters  # drop the zero counts: nothing to add to the KPIs
    return out


def _score_valid(
    valid: list[tuple[dict[str, Any], ContactResult]], params: ScoringParameters, out: BatchScores
) -> None:
    """Count the HELLO verdicts of the valid contacts and add the scores of their valid HELLOs to ``out``.

    All HELLOs of the batch go through numpy at once: per-HELLO Python would dominate the worker's CPU."""
    verdicts = np.frombuffer(b"".join(r.verdicts for _, r in valid), dtype=np.uint8)
    for value, count in enumerate(np.bincount(verdicts, minlength=max(HelloVerdict) + 1).tolist()):
        if value in HELLO_REJECTION:
            out.counters[HELLO_REJECTION[HelloVerdict(value)]] += count
    ok = verdicts == HelloVerdict.VALID
    out.counters["hellosScored"] += int(ok.sum())
    times = np.frombuffer(b"".join(c["t"] for c, _ in valid), dtype=">u4")[ok]
    rssis = np.frombuffer(b"".join(c["rssi"] for c, _ in valid), dtype=">i2")[ok]
    index = np.repeat(np.arange(len(valid)), [c["n"] for c, _ in valid])[ok]
    contact_scores = score_contacts(times, rssis, index, len(valid), params)
    for (_, r), score in zip(valid, contact_scores.tolist(), strict=True):
        # A zero score is no exposure. id_a and epoch_id are set on every VALID contact (the client's
        # contract); testing them only narrows their types.
        if score > 0.0 and r.id_a is not None and r.epoch_id is not None:
            by_epoch = out.scores.setdefault(r.id_a, {})
            by_epoch[r.epoch_id] = by_epoch.get(r.epoch_id, 0.0) + score
