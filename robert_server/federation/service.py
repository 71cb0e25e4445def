"""The receiving side: the Federation gRPC service (proto/federation.proto) that partners call.

A call is accepted only over mutual TLS from a partner's certificate (:mod:`.tls`); each batch in it is
checked (the sender is the certificate's country, the contacts are for our country code, sizes), then
stored as contacts to match, marked with their origin, in the idempotent steps of :mod:`.received`.
The ECC of each contact is checked where K_G is, in our crypto service, when our matching worker
validates the batch: a contact that is not for us is refused there and counted for that partner
(:meth:`robert_server.matching.worker.Worker._forward`), never forwarded again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import struct
from typing import Any

import grpc
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock
from robert_common.rpc import federation_pb2 as pb
from robert_common.rpc import federation_pb2_grpc as pb_grpc
from robert_common.settings import FederationPartner, Settings, SettingsError
from robert_server import contacts, kpis
from robert_server.federation import counters, received, tls

log = logging.getLogger("robert.federation")

MAX_CONTACTS_PER_BATCH = 1000
MAX_HELLOS_PER_CONTACT = 20_000  # 14 days of a HELLO every ~60 s, with room
BATCH_ID = re.compile(r"[\x21-\x7e]{1,200}")


class Refused(Exception):
    """A batch that is refused; the message is the reason given to the partner."""


def _pack(c: pb.ForeignContact) -> dict[str, Any]:
    """A delivered contact as :mod:`robert_server.contacts` stores it (Refused when malformed)."""
    n = len(c.time_collected) // 4
    if not (
        len(c.ebid) == 8
        and len(c.ecc) == 1
        and 0 < n <= MAX_HELLOS_PER_CONTACT
        and len(c.time_collected) == 4 * n
        and len(c.time_from_hello) == 2 * n
        and len(c.macs) == 5 * n
        and len(c.rssi) == 2 * n
    ):
        raise Refused("malformed contact")
    return {
        "ebid": bytes(c.ebid),
        "ecc": bytes(c.ecc),
        "n": n,
        "t": bytes(c.time_collected),
        "th": bytes(c.time_from_hello),
        "mac": bytes(c.macs),
        "rssi": bytes(c.rssi),
    }


def digest(packed: list[dict[str, Any]]) -> bytes:
    """SHA-256 of a batch's contacts (fields length-prefixed, in order)."""
    h = hashlib.sha256()
    for c in packed:
        for name in ("ebid", "ecc", "t", "th", "mac", "rssi"):
            h.update(struct.pack(">I", len(c[name])) + c[name])
    return h.digest()


class FederationServicer(pb_grpc.FederationServicer):
    def __init__(self, db: AsyncDatabase, settings: Settings, clock: Clock) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    async def DeliverContacts(  # noqa: N802 - gRPC method name
        self, request: pb.DeliverContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeliverContactsResponse:
        cert = tls.peer_certificate(context)
        partner = tls.identify(cert, self.settings.federation_partners) if cert is not None else None
        if partner is None:
            counters.REFUSED_CALLS.inc()
            log.warning("federation call refused: not a partner's certificate")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not a partner's certificate")
            raise AssertionError("unreachable")  # abort raises
        results = [await self._deliver(partner, b) for b in request.batches]
        return pb.DeliverContactsResponse(results=results)

    async def _deliver(self, partner: FederationPartner, batch: pb.ContactBatch) -> pb.BatchResult:
        label = partner.label
        try:
            status = await self._store(partner, batch)
        except Refused as e:
            n = len(batch.contacts)
            counters.CONTACTS.labels(label, "refused").inc(n)
            await kpis.increment(
                self.db, self._today(), **counters.per_partner(counters.REFUSED, partner.country_code, n)
            )
            log.warning("federation batch refused", extra={"partner": label, "reason": str(e)})
            return pb.BatchResult(batch_id=batch.batch_id, status=pb.BATCH_REFUSED, reason=str(e))
        return pb.BatchResult(batch_id=batch.batch_id, status=status)

    async def _store(self, partner: FederationPartner, batch: pb.ContactBatch) -> pb.BatchStatus:
        if batch.sender_country_code != partner.country_code:
            raise Refused("sender country is not the certificate's")
        if batch.receiver_country_code != self.settings.country_code:
            raise Refused("contacts for another country")
        if not BATCH_ID.fullmatch(batch.batch_id):
            raise Refused("batch id must be 1 to 200 printable ASCII characters")
        if not 0 < len(batch.contacts) <= MAX_CONTACTS_PER_BATCH:
            raise Refused(f"a batch holds 1 to {MAX_CONTACTS_PER_BATCH} contacts")
        packed = [_pack(c) for c in batch.contacts]
        key = received.record_id(partner.country_code, batch.batch_id)
        now = self.clock.utcnow()
        begun = await received.begin(self.db, key, digest(packed), len(packed), now)
        if begun is received.Begun.CONFLICT:
            raise Refused("batch id already used for other contacts")
        if begun is received.Begun.DONE:
            # Released already, unless the delivery that stored it stopped right before.
            await contacts.release_forwarded(self.db, contacts.forwarded_ids(key, len(packed)))
            return pb.BATCH_DUPLICATE
        ids = await contacts.store_forwarded(self.db, partner.country_code, key, packed, now)
        counts = counters.per_partner(counters.RECEIVED, partner.country_code, len(packed))
        await kpis.increment_once(self.db, self._today(), f"federation:{key}", counts, {})
        await received.finish(self.db, key)
        await contacts.release_forwarded(self.db, ids)
        counters.CONTACTS.labels(partner.label, "received").inc(len(packed))
        log.info("federation batch accepted", extra={"partner": partner.label, "contacts": len(packed)})
        return pb.BATCH_ACCEPTED

    def _today(self) -> dt.date:
        return self.clock.utcnow().date()


async def start_server(
    db: AsyncDatabase, settings: Settings, clock: Clock, listen: str | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start the Federation service on ``listen`` (default ROBERT_FEDERATION_LISTEN), mutual TLS only;
    returns it and its port."""
    creds = tls.server_credentials(settings)
    await contacts.ensure_indexes(db)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", tls.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", tls.MAX_MESSAGE_BYTES),
        ]
    )
    pb_grpc.add_FederationServicer_to_server(FederationServicer(db, settings, clock), server)
    address = listen or settings.federation_listen
    port = server.add_secure_port(address, creds)
    if port == 0:
        raise SettingsError(f"cannot bind the federation service to {address}")
    await server.start()
    log.info("federation service listening", extra={"address": address, "port": port})
    return server, port
