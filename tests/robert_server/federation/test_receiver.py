"""The Federation service (receiver), over real gRPC with mutual TLS, and our matching of what it stores."""

from __future__ import annotations

import grpc
import pytest

from robert_common.rpc import federation_pb2 as pb
from robert_common.rpc import federation_pb2_grpc as pb_grpc
from robert_server import contacts, kpis, registrations
from robert_server.federation import outbox, received
from tests.robert_server.federation.conftest import (
    OTHER_PARTNER,
    PARTNER,
    STRANGER,
    US,
    Federation,
    batch,
)
from tests.robert_server.matching.test_worker import FULL_EPOCH


async def test_a_partners_contacts_are_matched_here_once_and_are_no_local_report(
    federation: Federation,
) -> None:
    f = federation
    heard = await f.phone()
    e = f.days_ago_epoch(1)
    first = batch("b-1", [f.contact(heard, e), f.contact(heard, e + 1)])

    assert [r.status for r in await f.deliver(first)] == [pb.BATCH_ACCEPTED]
    assert [r.status for r in await f.deliver(first)] == [pb.BATCH_DUPLICATE]  # a retry adds nothing
    await f.worker().run_once()
    assert [r.status for r in await f.deliver(first)] == [pb.BATCH_DUPLICATE]  # nor after matching
    await f.worker().run_once()

    reg = await registrations.get(f.db, heard.id_a)
    assert reg is not None and reg["at_risk"] is True
    assert reg["exposures"] == {str(e): pytest.approx(FULL_EPOCH), str(e + 1): pytest.approx(FULL_EPOCH)}
    k = await kpis.report(f.db)
    assert k["federationContactsReceived"] == 2 and k["federationContactsReceived_0x22"] == 2
    assert k["reports"] == 0 and k["federationContactsRefused"] == 0
    assert await contacts.pending_batches(f.db) == 0


async def test_the_same_batch_id_from_two_partners_is_two_batches(federation: Federation) -> None:
    f = federation
    heard = await f.phone()
    e = f.days_ago_epoch(1)
    r1 = await f.deliver(batch("same", [f.contact(heard, e)]))
    r2 = await f.deliver(
        batch("same", [f.contact(heard, e + 1)], sender=OTHER_PARTNER), as_country=OTHER_PARTNER
    )
    assert [r.status for r in r1 + r2] == [pb.BATCH_ACCEPTED, pb.BATCH_ACCEPTED]
    await f.worker().run_once()
    reg = await registrations.get(f.db, heard.id_a)
    assert reg is not None and set(reg["exposures"]) == {str(e), str(e + 1)}


async def test_bad_batches_are_refused_with_a_reason_and_counted(federation: Federation) -> None:
    f = federation
    heard = await f.phone()
    c = f.contact(heard, f.days_ago_epoch(1))
    malformed = batch("bad-hellos", [c])
    malformed.contacts[0].macs = b"\x00" * 3
    results = await f.deliver(
        batch("as-other", [c], sender=OTHER_PARTNER),  # 0x22's certificate claiming to be 0x23
        batch("not-for-us", [c], receiver=0x30),
        batch("", [c]),
        batch("empty", []),
        malformed,
        batch("ok", [c]),
    )
    assert [r.status for r in results] == [pb.BATCH_REFUSED] * 5 + [pb.BATCH_ACCEPTED]
    assert [r.reason for r in results[:5]] == [
        "sender country is not the certificate's",
        "contacts for another country",
        "batch id must be 1 to 200 printable ASCII characters",
        "a batch holds 1 to 1000 contacts",
        "malformed contact",
    ]
    # The same id again with other contacts is refused, and leaves the first one alone.
    other = batch("ok", [f.contact(heard, f.days_ago_epoch(2))])
    assert [(r.status, r.reason) for r in await f.deliver(other)] == [
        (pb.BATCH_REFUSED, "batch id already used for other contacts")
    ]
    k = await kpis.report(f.db)
    assert k["federationContactsRefused_0x22"] == 5 and k["federationContactsReceived"] == 1


async def test_only_partners_certificates_may_call(federation: Federation) -> None:
    f = federation
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await f.deliver(batch("x", [], sender=STRANGER), as_country=STRANGER)
    assert denied.value.code() == grpc.StatusCode.UNAVAILABLE  # its CA is not trusted: no handshake
    # A client without a certificate does not get through the handshake either.
    assert f.pkis is not None
    creds = grpc.ssl_channel_credentials(root_certificates=f.pkis[US].ca.read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{f.port}", creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as no_cert:
            await pb_grpc.FederationStub(channel).DeliverContacts(pb.DeliverContactsRequest(), timeout=5)
    assert no_cert.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_is_its_own_ca_s_country_only(federation: Federation) -> None:
    """The server trusts both partner CAs; a certificate of 0x23's CA is 0x23, whatever it claims."""
    f = federation
    heard = await f.phone()
    c = f.contact(heard, f.days_ago_epoch(1))
    results = await f.deliver(batch("claim", [c], sender=PARTNER), as_country=OTHER_PARTNER)
    assert [(r.status, r.reason) for r in results] == [
        (pb.BATCH_REFUSED, "sender country is not the certificate's")
    ]


async def test_contacts_not_for_our_country_are_refused_at_matching_and_never_forwarded(
    federation: Federation,
) -> None:
    f = federation
    heard = await f.phone()
    e = f.days_ago_epoch(1)
    third_country = f.contact(heard, e, cc=OTHER_PARTNER)  # its ECC names 0x23: only K_G tells
    assert [r.status for r in await f.deliver(batch("mixed", [third_country, f.contact(heard, e + 1)]))] == [
        pb.BATCH_ACCEPTED
    ]
    await f.worker().run_once()
    reg = await registrations.get(f.db, heard.id_a)
    assert reg is not None and set(reg["exposures"]) == {str(e + 1)}
    assert await outbox.count(f.db) == 0
    k = await kpis.report(f.db)
    assert k["federationContactsRefused_0x22"] == 1 and k["contactsForeign"] == 0


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["stored", "finished"])
async def test_a_receiver_dying_midway_stores_each_contact_once(
    federation: Federation, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The receiver dies after storing the contacts (held) or after recording the batch stored; the
    partner, with no answer, delivers again: the contacts are matched exactly once."""
    f = federation
    heard = await f.phone()
    e = f.days_ago_epoch(1)
    b = batch("crashy", [f.contact(heard, e)])
    real_finish, real_release = received.finish, contacts.release_forwarded

    async def dying(*args: object) -> None:
        if where == "finished":
            await real_finish(*args)  # type: ignore[arg-type]
        raise Crash(where)

    monkeypatch.setattr(received if where == "stored" else contacts,
                        "finish" if where == "stored" else "release_forwarded", dying)  # fmt: skip
    if where == "finished":
        monkeypatch.setattr(received, "finish", real_finish)
        monkeypatch.setattr(contacts, "release_forwarded", dying)
    with pytest.raises(grpc.aio.AioRpcError):
        await f.deliver(b)
    await f.worker().run_once()  # held: nothing to match yet
    reg = await registrations.get(f.db, heard.id_a)
    assert reg is not None and not reg.get("exposures")
    monkeypatch.setattr(received, "finish", real_finish)
    monkeypatch.setattr(contacts, "release_forwarded", real_release)

    expected = pb.BATCH_ACCEPTED if where == "stored" else pb.BATCH_DUPLICATE
    assert [r.status for r in await f.deliver(b)] == [expected]
    await f.worker().run_once()
    assert [r.status for r in await f.deliver(b)] == [pb.BATCH_DUPLICATE]
    await f.worker().run_once()
    reg = await registrations.get(f.db, heard.id_a)
    assert reg is not None and reg["exposures"] == {str(e): pytest.approx(FULL_EPOCH)}
    assert (await kpis.report(f.db))["federationContactsReceived"] == 1
    assert US == f.cs.settings.country_code


async def test_a_parked_forwarded_batch_keeps_its_origin_when_put_back(federation: Federation) -> None:
    """A forwarded batch that became a dead letter and is retried is still the partner's: its contacts
    that are not for us are refused, never forwarded (restore_batch used to drop ``origin``)."""
    f = federation
    heard = await f.phone()
    third_country = f.contact(heard, f.days_ago_epoch(1), cc=OTHER_PARTNER)
    assert [r.status for r in await f.deliver(batch("parked", [third_country]))] == [pb.BATCH_ACCEPTED]
    (doc,) = await contacts.collection(f.db).find({}).to_list()
    await contacts.collection(f.db).delete_one({"_id": doc["_id"]})  # as parking does
    await contacts.restore_batch(f.db, doc)
    await f.worker().run_once()
    assert await outbox.count(f.db) == 0
    assert (await kpis.report(f.db))["federationContactsRefused_0x22"] == 1
