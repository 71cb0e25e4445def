"""ValidateContacts answers to scores and KPI counters (:mod:`robert_server.matching.validation`).

The worker tests check this with a real crypto service; here the answers are written out, to reach the
cases a real service gives rarely (a BAD_EPOCH HELLO, a verdict count that does not match the contact).
"""

from __future__ import annotations

import pytest

from robert_server.contacts import Contact, Hello, pack_contact
from robert_server.crypto_client import ContactResult, ContactStatus, HelloVerdict
from robert_server.matching.scoring import ScoringParameters, score_contact
from robert_server.matching.validation import score_batch

T0 = 3_800_000_000  # NTP seconds
ID_A = b"\x01" * 5


def packed(n: int) -> dict:
    return pack_contact(Contact(b"e" * 8, b"c", [Hello(T0 + 60 * k, 0, b"m" * 5, -35) for k in range(n)]))


def valid(verdicts: list[HelloVerdict], epoch_id: int = 7) -> ContactResult:
    return ContactResult(ContactStatus.VALID, 0x21, ID_A, epoch_id, bytes(verdicts))


def rejected(status: ContactStatus, country_code: int = 0x21) -> ContactResult:
    return ContactResult(status, country_code, None, None, b"")


def test_each_rejected_hello_is_counted_under_its_verdict_and_only_valid_ones_are_scored() -> None:
    v = [HelloVerdict.VALID] * 6 + [HelloVerdict.BAD_MAC, HelloVerdict.TIME_MISMATCH, HelloVerdict.BAD_EPOCH]
    out = score_batch([packed(len(v))], [valid(v)], ScoringParameters())
    assert out.scores == {ID_A: {7: pytest.approx(score_contact([(T0 + 60 * k, -35) for k in range(6)]))}}
    assert out.counters == {
        "contactsProcessed": 1,
        "hellosProcessed": 9,
        "hellosScored": 6,
        "hellosRejectedBadMac": 1,
        "hellosRejectedTimeMismatch": 1,
        "hellosRejectedBadEpoch": 1,
    }
    assert out.foreign == []


def test_rejected_contacts_count_all_their_hellos_and_foreign_ones_are_kept() -> None:
    contacts = [packed(2), packed(3), packed(4), packed(5)]
    results = [
        rejected(ContactStatus.FOREIGN_COUNTRY, 0x22),
        rejected(ContactStatus.UNDECRYPTABLE),
        rejected(ContactStatus.UNKNOWN_IDENTITY),
        valid([HelloVerdict.VALID] * 4),  # 4 verdicts for 5 HELLOs: malformed, not scored
    ]
    out = score_batch(contacts, results, ScoringParameters())
    assert out.scores == {}
    assert out.foreign == [(0, 0x22, contacts[0])]
    assert out.counters == {
        "contactsProcessed": 4,
        "hellosProcessed": 14,
        "contactsForeign": 1,
        "hellosRejectedForeignCountry": 2,
        "hellosRejectedUndecryptable": 3,
        "hellosRejectedUnknownIdentity": 4,
        "hellosRejectedMalformed": 5,
    }


def test_scores_of_contacts_of_the_same_registration_and_epoch_add_up() -> None:
    one = score_contact([(T0 + 60 * k, -35) for k in range(3)])
    out = score_batch(
        [packed(3)] * 3, [valid([HelloVerdict.VALID] * 3, e) for e in (7, 7, 8)], ScoringParameters()
    )
    assert out.scores == {ID_A: {7: pytest.approx(2 * one), 8: pytest.approx(one)}}
