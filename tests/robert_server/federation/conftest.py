"""Helpers of the federation tests: country PKIs, our Federation service over real mutual TLS, partners.

We are 0x21 (the crypto service fixture's country); 0x22 and 0x23 are partners, 0x24 is a stranger
whose certificate chains to no partner CA.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from robert_common.rpc import federation_pb2 as pb
from robert_common.rpc import federation_pb2_grpc as pb_grpc
from robert_common.settings import FederationPartner, Settings
from robert_server import contacts, registrations
from robert_server.contacts import Contact
from robert_server.federation import service, tls
from tests.fixtures.crypto import CryptoService
from tests.robert_server.matching.conftest import Matching

US, PARTNER, OTHER_PARTNER, STRANGER = 0x21, 0x22, 0x23, 0x24


def to_pb(c: Contact) -> pb.ForeignContact:
    p = contacts.pack_contact(c)
    return pb.ForeignContact(ebid=p["ebid"], ecc=p["ecc"], time_collected=p["t"],
                             time_from_hello=p["th"], macs=p["mac"], rssi=p["rssi"])  # fmt: skip


def batch(batch_id: str, cs: Sequence[Contact], sender: int = PARTNER, receiver: int = US) -> pb.ContactBatch:
    return pb.ContactBatch(
        batch_id=batch_id, sender_country_code=sender, receiver_country_code=receiver,
        contacts=[to_pb(c) for c in cs],
    )  # fmt: skip


def partner_settings(
    base: Settings, pkis: dict[int, tls.CountryPki], me: int, peers: dict[int, str]
) -> Settings:
    """Settings of country ``me`` whose partners are ``peers`` ({cc: endpoint})."""
    return base.model_copy(
        update={
            "country_code": me,
            "federation_tls_cert": pkis[me].cert,
            "federation_tls_key": pkis[me].key,
            "federation_partners": [
                FederationPartner(country_code=cc, endpoint=ep, ca=pkis[cc].ca) for cc, ep in peers.items()
            ],
        }
    )


@dataclass
class Federation(Matching):
    """Our federation service (and the matching helpers) over the crypto service's database."""

    pkis: dict[int, tls.CountryPki] | None = None
    port: int = 0
    server: Any = None
    our_settings: Settings | None = None

    async def stop_service(self) -> None:
        await self.server.stop(None)

    async def start_service(self) -> None:
        assert self.our_settings is not None
        self.server, _ = await service.start_server(
            self.db, self.our_settings, self.cs.clock, f"127.0.0.1:{self.port}"
        )

    def settings_of(self, cc: int) -> Settings:
        assert self.pkis is not None
        return partner_settings(self.cs.settings, self.pkis, cc, {US: f"127.0.0.1:{self.port}"})

    async def deliver(self, *batches: pb.ContactBatch, as_country: int = PARTNER) -> list[pb.BatchResult]:
        settings = self.settings_of(as_country)
        async with tls.open_channel(settings, settings.federation_partners[0]) as channel:
            r = await pb_grpc.FederationStub(channel).DeliverContacts(
                pb.DeliverContactsRequest(batches=list(batches)), timeout=10
            )
        return list(r.results)


@pytest.fixture
def pkis(tmp_path: Path) -> dict[int, tls.CountryPki]:
    return {
        cc: tls.create_country_pki(tmp_path / f"pki-{cc:02x}", cc)
        for cc in (US, PARTNER, OTHER_PARTNER, STRANGER)
    }


@pytest.fixture
async def federation(
    crypto_service: CryptoService, pkis: dict[int, tls.CountryPki]
) -> AsyncIterator[Federation]:
    await registrations.ensure_indexes(crypto_service.db)
    await contacts.ensure_indexes(crypto_service.db)
    ours = partner_settings(
        crypto_service.settings, pkis, US, {PARTNER: "127.0.0.1:1", OTHER_PARTNER: "127.0.0.1:1"}
    )
    f = Federation(crypto_service, pkis=pkis, our_settings=ours)
    f.server, f.port = await service.start_server(
        crypto_service.db, ours, crypto_service.clock, "127.0.0.1:0"
    )
    try:
        yield f
    finally:
        await f.server.stop(None)
