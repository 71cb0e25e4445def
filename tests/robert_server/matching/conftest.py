"""Helpers of the matching tests: real crypto service, real database, contacts built like a phone does."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from crypto_backend import protocol
from robert_server import contacts, registrations
from robert_server.contacts import Contact, Hello
from robert_server.matching.worker import MatchingConfig, Worker
from tests.fixtures.crypto import CryptoService, KnownPhone

LEASE = 60.0
_report_ids = itertools.count()


def offset_zero(options: Any) -> int:
    """lastContactDate = the contact's own day (when allowed): makes risk dates certain in tests."""
    return 0 if 0 in options else options[0]


@dataclass
class Matching:
    """A crypto service, the test database, and contacts as phones upload them."""

    cs: CryptoService
    config: MatchingConfig = field(default_factory=lambda: MatchingConfig(lease_seconds=LEASE))

    @property
    def db(self) -> Any:
        return self.cs.db

    async def phone(self, registered: bool = True) -> KnownPhone:
        """A phone known to the crypto service, with a registration document unless ``registered=False``."""
        p = await self.cs.register_phone()
        if registered:
            await registrations.create(self.db, p.id_a, self.cs.epoch_now(), None)
        return p

    def contact(
        self,
        heard: KnownPhone,
        epoch_id: int,
        *,
        minutes: int = 15,
        rssi: int = -35,
        per_minute: int = 1,
        start: int = 0,
        cc: int | None = None,
        bad_mac: int = 0,
        time_shift16: int = 0,
    ) -> Contact:
        """The Contact a phone uploads after hearing ``heard`` during ``epoch_id`` (PROTOCOL.md 4, 6).

        ``bad_mac``: that many HELLOs (the first ones) get a wrong MAC; ``time_shift16`` moves every
        HELLO's own 16-bit time away from the collection time.
        """
        ebid = self.cs.ebid(heard.id_a, epoch_id)
        ecc = self.cs.ecc(ebid, cc)
        t0 = self.cs.time.epoch_start(epoch_id) + start
        hellos = []
        for k, (m, i) in enumerate(itertools.product(range(minutes), range(per_minute))):
            t = t0 + 60 * m + (60 // per_minute) * i
            t16 = (t + time_shift16) & 0xFFFF
            mac = protocol.hello_mac(heard.k_mac, ecc, ebid, t16)
            if k < bad_mac:
                mac = bytes(b ^ 0xFF for b in mac)
            hellos.append(Hello(t, t16, mac, rssi))
        return Contact(ebid, ecc, hellos)

    async def upload(self, *contact_list: Contact) -> str:
        """Store a report as /report does; returns its report id."""
        report_id = f"r{os.getpid()}-{next(_report_ids)}"
        await contacts.store_report(self.db, report_id, list(contact_list), self.cs.clock.utcnow())
        return report_id

    def worker(self, on_step: Callable[[str], None] | None = None, owner: str | None = None) -> Worker:
        return Worker(
            self.db,
            self.cs.matcher,
            self.cs.time,
            self.config,
            owner=owner,
            pick=offset_zero,
            on_step=on_step,
        )

    def days_ago_epoch(self, days: float) -> int:
        return self.cs.time.epoch_id(self.cs.time.ntp_now() - int(days * 86_400))

    def advance(self, seconds: float) -> None:
        self.cs.clock.advance(seconds)

    def advance_days(self, days: float) -> None:
        self.cs.clock.advance(days * 86_400)

    def today(self) -> dt.date:
        return self.cs.clock.utcnow().date()


@pytest.fixture
async def matching(crypto_service: CryptoService) -> Matching:
    await registrations.ensure_indexes(crypto_service.db)
    await contacts.ensure_indexes(crypto_service.db)
    return Matching(crypto_service)


__all__ = ["Matching", "matching", "protocol", "offset_zero"]
