"""A poison contact batch (issue 10 item 10): isolated from its group, parked after bounded attempts,
listed and put back by ``robert matcher dead-letters``. Real crypto service, real database, real CLI."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc
import pytest

from robert_common.rpc import crypto_pb2 as pb
from robert_server import contacts, dead_letters, registrations
from robert_server.matching.worker import MatchingConfig
from tests.fixtures.crypto import CryptoProxy
from tests.robert_server.matching.conftest import LEASE, Matching

MAX_ATTEMPTS = 3


async def poison(matching: Matching, phone) -> str:
    """A stored batch whose document is corrupt (an EBID that is not bytes): every validation of it fails."""
    report_id = await matching.upload(matching.contact(phone, matching.days_ago_epoch(1)))
    batch_id = f"{report_id}:0"
    await contacts.collection(matching.db).update_one({"_id": batch_id}, {"$set": {"contacts.0.ebid": "bad"}})
    return batch_id


async def cli(matching: Matching, mongo_uri: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "ROBERT_MONGODB_URI": mongo_uri, "ROBERT_MONGODB_DATABASE": matching.db.name}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "robert_server.cli", "matcher", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await child.communicate()
    return child.returncode or 0, out.decode()


@pytest.mark.slow
async def test_a_poison_batch_is_isolated_parked_listed_and_retried(
    matching: Matching, mongo_uri: str
) -> None:
    matching.config = MatchingConfig(lease_seconds=LEASE, claim_batches=8, max_attempts=MAX_ATTEMPTS)
    phones = [await matching.phone() for _ in range(7)]
    e = matching.days_ago_epoch(2)
    for p in phones:  # 7 good batches and the poison: one group of 8, one ValidateContacts call
        await matching.upload(matching.contact(p, e))
    bad = await poison(matching, phones[0])

    stats = await matching.worker().run_once()
    assert stats.batches == 7  # the neighbours went through on the first pass
    for p in phones:
        reg = await registrations.get(matching.db, p.id_a)
        assert reg is not None and reg["exposures"] == {str(e): pytest.approx(14.0)}
    assert await contacts.pending_batches(matching.db) == 1  # the poison, left leased

    for _ in range(MAX_ATTEMPTS - 1):  # bounded: after its last attempt it is parked
        matching.advance(LEASE + 1)
        await matching.worker().run_once()
    assert await contacts.pending_batches(matching.db) == 0
    [parked] = await dead_letters.summaries(matching.db)
    assert parked["_id"] == bad and parked["attempts"] == MAX_ATTEMPTS and parked["contacts"] == 1
    assert parked["reason"] == "TypeError"
    matching.advance(LEASE + 1)
    assert (await matching.worker().run_once()).batches == 0  # no longer retried

    status, out = await cli(matching, mongo_uri, "dead-letters")
    assert status == 0 and "1 dead letter(s)" in out and bad in out and "TypeError" in out
    status, out = await cli(matching, mongo_uri, "dead-letters", "--retry", "nope")
    assert status == 1 and "no such dead letter" in out
    # The operator fixes the document's cause (here: the document itself) and puts it back.
    status, out = await cli(matching, mongo_uri, "dead-letters", "--retry", bad)
    assert status == 0 and "put back" in out
    assert await dead_letters.summaries(matching.db) == []
    doc = await contacts.collection(matching.db).find_one({"_id": bad})
    assert doc is not None and doc["attempts"] == 0


async def test_a_batch_that_never_completes_is_parked_unprocessed(matching: Matching) -> None:
    """Claimed max_attempts times without completing (it crashed or stalled its workers each time)."""
    matching.config = MatchingConfig(lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
    phone = await matching.phone()
    report_id = await matching.upload(matching.contact(phone, matching.days_ago_epoch(1)))
    await contacts.collection(matching.db).update_one(
        {"_id": f"{report_id}:0"}, {"$set": {"attempts": MAX_ATTEMPTS}}
    )
    stats = await matching.worker().run_once()
    assert stats.batches == 0 and stats.counters["batchesParked"] == 1
    assert [d["_id"] for d in await dead_letters.summaries(matching.db)] == [f"{report_id}:0"]
    assert (await registrations.get(matching.db, phone.id_a))["exposures"] == {}


async def test_a_crypto_outage_longer_than_the_attempts_parks_nothing(matching: Matching) -> None:
    """Batches given back because the crypto service is down were not attempted: their count stays."""
    from robert_common.mongo import free_port
    from robert_server.crypto_client import CryptoClient
    from robert_server.matching.worker import Worker

    matching.config = MatchingConfig(lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
    phone = await matching.phone()
    e = matching.days_ago_epoch(1)
    await matching.upload(matching.contact(phone, e))
    async with CryptoClient(f"127.0.0.1:{free_port()}", 0.5) as down:  # nothing listens there
        worker = Worker(matching.db, down, matching.cs.time, matching.config)
        for _ in range(MAX_ATTEMPTS + 2):
            assert (await worker.run_once()).batches == 0
    assert await dead_letters.summaries(matching.db) == []
    assert (await matching.worker().run_once()).batches == 1
    assert (await registrations.get(matching.db, phone.id_a))["exposures"] == {str(e): pytest.approx(14.0)}


class _RefusingCrypto(CryptoProxy):
    """The real crypto service behind a proxy: any ValidateContacts call holding the poison contact
    fails INTERNAL (as a crash of the service on that contact would), the others are forwarded. Counts
    the calls and the contacts of each."""

    def __init__(self, target: str, poison_ebid: bytes, settings: Any) -> None:
        super().__init__(target, settings)
        self.poison = poison_ebid
        self.sizes: list[int] = []

    async def validate(
        self, request: pb.ValidateContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ValidateContactsResponse:
        self.sizes.append(len(request.contacts))
        if any(c.ebid == self.poison for c in request.contacts):
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return await self.forward(request)


async def test_a_batch_the_crypto_service_refuses_is_split_out_then_parked(matching: Matching) -> None:
    from robert_server.crypto_client import CryptoClient
    from robert_server.matching.worker import Worker

    matching.config = MatchingConfig(lease_seconds=LEASE, claim_batches=8, max_attempts=2)
    phones = [await matching.phone() for _ in range(8)]
    e = matching.days_ago_epoch(2)
    report_ids = [await matching.upload(matching.contact(p, e)) for p in phones]
    poison_ebid = matching.cs.ebid(phones[5].id_a, e)
    gate = _RefusingCrypto(matching.cs.address, poison_ebid, matching.cs.settings)
    address = await gate.start()
    try:
        async with CryptoClient(address, 5.0, settings=matching.cs.settings, identity="matcher") as crypto:
            worker = Worker(matching.db, crypto, matching.cs.time, matching.config, pick=lambda o: o[0])
            assert (await worker.run_once()).batches == 7
            assert gate.sizes[0] == 8 and min(gate.sizes) == 1  # the group, halved down to the bad batch
            matching.advance(LEASE + 1)
            await worker.run_once()  # its second and last attempt
    finally:
        await gate.stop()
    [parked] = await dead_letters.summaries(matching.db)
    assert (
        parked["_id"] == f"{report_ids[5]}:0"
        and parked["reason"] == "CryptoError:INTERNAL:ERROR_REASON_UNSPECIFIED"
    )
    assert await contacts.pending_batches(matching.db) == 0
