"""Contact validation, PROTOCOL.md section 8 steps 1 to 4, for batches of thousands of contacts.

Built for bulk: one AES call for every ECC of the batch, one SKINNY call per (day key, batch),
per-HELLO arithmetic in numpy, one ``$in`` read of identities (done by the caller between
:func:`decrypt_contacts` and :func:`check_hellos`), and one tight HMAC loop per contact.

A Contact is one EBID heard many times, so its EBID is decrypted once per candidate day, not once
per HELLO. Candidate days: the day of each HELLO's collection epoch and, within ``hello_tolerance``
of a UTC day boundary, the neighbouring day (step 2). A decryption is accepted only when the
decrypted epoch lies in the key's own day and within 1 of some HELLO's collection epoch; the one
that the most HELLOs agree with gives the Contact's ``(id_A, epoch)``. HELLOs more than one epoch
away from it are ``HELLO_BAD_EPOCH``; a bad MAC (step 3) or time (step 4) voids only that HELLO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from crypto_backend import protocol
from robert_common.clock import EPOCH_DURATION, EPOCHS_PER_DAY, SECONDS_PER_DAY
from robert_common.rpc import crypto_pb2 as pb

MAX_CANDIDATE_DAYS = 4  # a real contact spans at most 2 days (+ neighbours): more is garbage
TIME16 = 1 << 16
_NO_EPOCH = -(1 << 40)  # an epoch no HELLO is ever near
_MAC_RECORD = np.dtype(f"V{protocol.HELLO_MAC_SIZE}")  # one HELLO MAC, read as bytes (never stripped)

DayKeyLookup = Callable[[int], bytes | None]  # day index (from timeStart) -> K_S


@dataclass
class DecryptedContact:
    """A local contact whose EBID decrypted: where its HELLOs are in the flat arrays, and what it gave."""

    index: int  # position in the request
    cc: int
    id_a: bytes
    epoch_id: int
    start: int  # HELLOs [start, stop) in the flat arrays
    stop: int


@dataclass
class Decrypted:
    """Result of step 1 and 2 for a batch: final results for some contacts, work left for the others."""

    results: list[pb.ContactValidation]
    pending: list[DecryptedContact] = field(default_factory=list)
    epoch_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    time_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    times16: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    macs: list[bytes] = field(default_factory=list)  # per pending contact, its packed MACs

    def id_as(self) -> set[bytes]:
        return {c.id_a for c in self.pending}


def _well_formed(c: pb.Contact) -> bool:
    n = len(c.time_collected) // 4
    return (
        len(c.ebid) == protocol.EBID_SIZE
        and len(c.ecc) == protocol.ECC_SIZE
        and n > 0
        and len(c.time_collected) == 4 * n
        and len(c.time_from_hello) == 2 * n
        and len(c.macs) == protocol.HELLO_MAC_SIZE * n
    )


def _flatten(contacts: Sequence[pb.Contact]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat arrays of every HELLO of ``contacts``: collection times, HELLO times, contact starts."""
    tc = np.frombuffer(b"".join(c.time_collected for c in contacts), dtype=">u4").astype(np.int64)
    th = np.frombuffer(b"".join(c.time_from_hello for c in contacts), dtype=">u2").astype(np.int64)
    counts = np.fromiter((len(c.time_collected) // 4 for c in contacts), dtype=np.int64, count=len(contacts))
    starts = np.zeros(len(contacts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return tc, th, starts


def decrypt_contacts(
    contacts: Sequence[pb.Contact],
    *,
    k_g: bytes,
    day_key: DayKeyLookup,
    time_start_ntp: int,
    server_cc: int,
    tolerance: int,
) -> Decrypted:
    """Steps 1 and 2, and the epoch and time checks of each HELLO, for a whole batch."""
    results = [pb.ContactValidation(status=pb.CONTACT_MALFORMED) for _ in contacts]
    formed = [i for i, c in enumerate(contacts) if _well_formed(c)]
    if not formed:
        return Decrypted(results)
    # Step 1: one AES-ECB call for every ECC of the batch.
    ccs = protocol.country_codes(
        k_g, b"".join(contacts[i].ebid for i in formed), b"".join(contacts[i].ecc for i in formed)
    )
    local = []
    for i, cc in zip(formed, ccs, strict=True):
        if cc == server_cc:
            local.append(i)
        else:
            results[i] = pb.ContactValidation(status=pb.CONTACT_FOREIGN_COUNTRY, country_code=cc)
    if not local:
        return Decrypted(results)
    local_contacts = [contacts[i] for i in local]
    tc, th, starts = _flatten(local_contacts)
    rel = tc - time_start_ntp
    epochs = rel // EPOCH_DURATION
    day = rel // SECONDS_PER_DAY
    into_day = rel - day * SECONDS_PER_DAY
    low = np.minimum.reduceat(day - (into_day <= tolerance), starts[:-1])
    high = np.maximum.reduceat(day + (SECONDS_PER_DAY - into_day <= tolerance), starts[:-1])

    # Step 2: group the EBIDs by candidate day; one bulk SKINNY decryption per day key.
    by_day: dict[int, list[int]] = {}
    for k, (lo, hi) in enumerate(zip(low.tolist(), high.tolist(), strict=True)):
        if hi - lo < MAX_CANDIDATE_DAYS:
            for d in range(lo, hi + 1):
                by_day.setdefault(d, []).append(k)
    n_local = len(local)
    owner = np.repeat(np.arange(n_local), np.diff(starts))  # the contact of each HELLO
    best_support = np.zeros(n_local, dtype=np.int64)
    best_epoch = np.zeros(n_local, dtype=np.int64)
    best_id: list[bytes] = [b""] * n_local
    for d, members in by_day.items():
        k_s = day_key(d)
        if k_s is None:
            continue
        plain = protocol.decrypt_ebids_packed(k_s, b"".join(local_contacts[k].ebid for k in members))
        blocks = np.frombuffer(plain, dtype=np.uint8).reshape(-1, 8).astype(np.int64)
        ep = (blocks[:, 0] << 16) | (blocks[:, 1] << 8) | blocks[:, 2]
        # A wrong key gives a random epoch: almost never one of its own day.
        own_day = ep // EPOCHS_PER_DAY == d
        member = np.asarray(members)
        candidate = np.full(n_local, _NO_EPOCH, dtype=np.int64)
        candidate[member[own_day]] = ep[own_day]
        position = np.zeros(n_local, dtype=np.int64)
        position[member] = np.arange(len(members))
        # Support of the decryption: the contact's HELLOs collected within 1 epoch of it.
        near = np.abs(epochs - candidate[owner]) <= 1
        support = np.bincount(owner, weights=near, minlength=n_local).astype(np.int64)
        better = support > best_support  # the first day with the most support wins
        best_support[better] = support[better]
        best_epoch[better] = candidate[better]
        for k, pos in zip(np.flatnonzero(better).tolist(), position[better].tolist(), strict=True):
            best_id[k] = plain[8 * pos + 3 : 8 * pos + 8]

    out = Decrypted(results)
    found = (best_support > 0).tolist()
    epoch_of = best_epoch.tolist()
    bounds = starts.tolist()
    for k, i in enumerate(local):
        if not found[k]:
            results[i] = pb.ContactValidation(status=pb.CONTACT_UNDECRYPTABLE, country_code=server_cc)
            continue
        out.pending.append(DecryptedContact(i, server_cc, best_id[k], epoch_of[k], bounds[k], bounds[k + 1]))
    contact_epoch = best_epoch[owner]  # 0 for an undecryptable contact, whose HELLOs are not looked at
    # Per HELLO: the collection epoch within 1 of the decrypted one (step 2), and the HELLO's own
    # 16-bit time within the tolerance of the collection time, with wrap-around at 65536 (step 4).
    gap = (th - (tc & 0xFFFF)) % TIME16
    out.time_ok = np.minimum(gap, TIME16 - gap) <= tolerance
    out.epoch_ok = np.abs(epochs - contact_epoch) <= 1
    out.times16 = th
    out.macs = [contacts[c.index].macs for c in out.pending]
    return out


def check_hellos(
    decrypted: Decrypted, contacts: Sequence[pb.Contact], k_macs: Mapping[bytes, bytes]
) -> list[pb.ContactValidation]:
    """Step 3 (MAC per HELLO, with K_A,mac of each id_A) and the verdicts of every HELLO.

    One native HMAC loop per contact; the MAC and time lists it takes, and the verdicts, are built once
    for the whole batch."""
    results = decrypted.results
    if not decrypted.pending:
        return results
    times16 = decrypted.times16.tolist()
    macs = np.frombuffer(b"".join(decrypted.macs), dtype=_MAC_RECORD).tolist()  # 5-byte bytes each
    mac_ok = np.zeros(len(times16), dtype=bool)
    known = []
    at = 0
    for c in decrypted.pending:
        n = c.stop - c.start
        k_mac = k_macs.get(c.id_a)
        if k_mac is None:
            results[c.index] = pb.ContactValidation(status=pb.CONTACT_UNKNOWN_IDENTITY, country_code=c.cc)
        else:
            contact = contacts[c.index]
            mac_ok[c.start : c.stop] = protocol.verify_hello_macs(
                k_mac, contact.ecc, contact.ebid, times16[c.start : c.stop], macs[at : at + n]
            )
            known.append(c)
        at += n
    # Precedence of the verdicts: a bad epoch, then a bad MAC, then a time mismatch.
    verdicts = np.where(decrypted.time_ok, pb.HELLO_VALID, pb.HELLO_TIME_MISMATCH)
    verdicts = np.where(mac_ok, verdicts, pb.HELLO_BAD_MAC)
    verdicts = np.where(decrypted.epoch_ok, verdicts, pb.HELLO_BAD_EPOCH).astype(np.uint8)
    packed = verdicts.tobytes()
    for c in known:
        results[c.index] = pb.ContactValidation(
            status=pb.CONTACT_VALID,
            country_code=c.cc,
            id_a=c.id_a,
            epoch_id=c.epoch_id,
            hello_verdicts=packed[c.start : c.stop],
        )
    return results
