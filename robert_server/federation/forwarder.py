"""The sending side: ``robert federation forward`` delivers the outbox to the partners' servers.

A round (:meth:`Forwarder.run_once`) visits every country with contacts in the outbox
(:mod:`.outbox`). For a partner: send its oldest outbox documents, up to
ROBERT_FEDERATION_BATCHES_PER_CALL at a time, each one federation batch whose id is the document's
id; count and delete those the partner answered. A partner that cannot be reached (or errs) is left
alone for a back-off that doubles at each failure up to ROBERT_FEDERATION_BACKOFF_MAX, with jitter
(half of it random) so that many senders do not retry in step. A country with no partner is kept
and, like a partner's contacts never delivered, dropped and counted after the retention period (the
contagious period: older contacts cannot matter any more).

Exactly once: an outbox document is never changed, and deleted only after the partner's answer was
counted; a forwarder dying anywhere sends it again, the partner answers "duplicate" (it deduplicates
by sender and batch id), and the KPI count is keyed by the batch id
(:func:`robert_server.kpis.increment_once`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock
from robert_common.rpc import federation_pb2 as pb
from robert_common.rpc import federation_pb2_grpc as pb_grpc
from robert_common.settings import FederationPartner, Settings
from robert_server import kpis
from robert_server.federation import counters, outbox, tls

log = logging.getLogger("robert.federation")

BACKOFF_BASE = 1.0  # seconds after the first failure
SWEEP_INTERVAL = 600.0  # seconds between two looks for contacts past the retention period

ChannelFactory = Callable[[Settings, FederationPartner], grpc.aio.Channel]


@dataclass
class Backoff:
    """Exponential back-off with jitter of one partner: ``base * 2**(failures-1)``, at most ``cap``,
    of which a random half is waited (so many senders do not retry together)."""

    cap: float
    base: float = BACKOFF_BASE
    failures: int = 0
    until: float = 0.0  # monotonic seconds

    def failed(self, now: float, rand: Callable[[], float]) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
        wait = delay / 2 + rand() * delay / 2
        self.until = now + wait
        return wait

    def succeeded(self) -> None:
        self.failures, self.until = 0, 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until


@dataclass
class RoundStats:
    """What one round did: contacts by event and partner label, delivery failures."""

    contacts: Counter[str] = field(default_factory=Counter)
    failures: int = 0


def to_pb(doc: dict[str, Any], sender: int) -> pb.ContactBatch:
    """An outbox document as one federation batch."""
    return pb.ContactBatch(
        batch_id=doc["_id"],
        sender_country_code=sender,
        receiver_country_code=doc["country_code"],
        contacts=[
            pb.ForeignContact(
                ebid=c["ebid"],
                ecc=c["ecc"],
                time_collected=c["t"],
                time_from_hello=c["th"],
                macs=c["mac"],
                rssi=c["rssi"],
            )  # fmt: skip
            for c in doc["contacts"]
        ],
    )


class Forwarder:
    """Delivers the outbox. ``on_step(name)`` is called between steps (tests inject crashes there)."""

    def __init__(
        self,
        db: AsyncDatabase,
        settings: Settings,
        clock: Clock,
        *,
        channel_factory: ChannelFactory = tls.open_channel,
        on_step: Callable[[str], None] | None = None,
        rand: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.partners = {p.country_code: p for p in settings.federation_partners}
        self.backoff = {cc: Backoff(settings.federation_backoff_max) for cc in self.partners}
        self._channel_factory = channel_factory
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._on_step = on_step
        self._rand = rand
        self._monotonic = monotonic
        self._last_sweep = -SWEEP_INTERVAL

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _step(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    def _today(self) -> dt.date:
        return self.clock.utcnow().date()

    # --- a round ---------------------------------------------------------------------------------

    async def run_once(self, *, sweep: bool | None = None) -> RoundStats:
        """Deliver what can be delivered now; drop what is past the retention period (every
        SWEEP_INTERVAL seconds, or when ``sweep`` says so)."""
        stats = RoundStats()
        now = self._monotonic()
        if sweep is None:
            sweep = now - self._last_sweep >= SWEEP_INTERVAL
        if sweep:
            self._last_sweep = now
        for cc in await outbox.countries(self.db):
            if sweep:
                await self._drop_expired(cc, stats)
            partner = self.partners.get(cc)
            if partner is not None and self.backoff[cc].ready(self._monotonic()):
                await self._deliver(partner, stats)
        return stats

    async def next_ready_in(self) -> float:
        """Seconds until some partner's back-off ends (0 when one is ready)."""
        now = self._monotonic()
        return max(0.0, min((b.until - now for b in self.backoff.values()), default=0.0))

    async def run_forever(self, stop: asyncio.Event) -> None:
        """A round every ROBERT_FEDERATION_INTERVAL seconds (sooner after a full call) until ``stop``."""
        while not stop.is_set():
            try:
                stats = await self.run_once()
                if stats.contacts or stats.failures:
                    log.info("federation round", extra={"failures": stats.failures, **stats.contacts})
            except (OSError, ConnectionError) as e:
                log.warning("federation round failed; retrying", extra={"error": type(e).__name__})
            except Exception:  # a bug must not stop forwarding for every partner: log and go on
                log.exception("federation round failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.federation_interval)
            except TimeoutError:
                pass

    # --- one partner -------------------------------------------------------------------------------

    def _stub(self, partner: FederationPartner) -> pb_grpc.FederationStub:
        channel = self._channels.get(partner.country_code)
        if channel is None:
            channel = self._channels[partner.country_code] = self._channel_factory(self.settings, partner)
        return pb_grpc.FederationStub(channel)

    async def _deliver(self, partner: FederationPartner, stats: RoundStats) -> None:
        """Send the partner's outbox, a call at a time, until it is empty or a call fails."""
        cc, per_call = partner.country_code, self.settings.federation_batches_per_call
        while True:
            docs = await outbox.pending(self.db, cc, per_call)
            if not docs:
                self.backoff[cc].succeeded()
                return
            request = pb.DeliverContactsRequest(batches=[to_pb(d, self.settings.country_code) for d in docs])
            try:
                response = await self._stub(partner).DeliverContacts(
                    request, timeout=self.settings.federation_timeout
                )
                results = list(response.results)
                if [r.batch_id for r in results] != [d["_id"] for d in docs]:
                    raise ValueError("answers do not match the batches")
            except (grpc.aio.AioRpcError, ValueError) as e:
                wait = self.backoff[cc].failed(self._monotonic(), self._rand)
                stats.failures += 1
                counters.DELIVERY_FAILURES.labels(partner.label).inc()
                reason = e.code().name if isinstance(e, grpc.aio.AioRpcError) else str(e)
                # A fresh channel at the next try: our back-off decides when, not the channel's own.
                channel = self._channels.pop(cc, None)
                if channel is not None:
                    await channel.close()
                extra = {"partner": partner.label, "reason": reason, "retry_in": round(wait, 1)}
                log.warning("federation delivery failed; backing off", extra=extra)
                return
            self._step("delivered")
            done = [await self._count(partner, d, r, stats) for d, r in zip(docs, results, strict=True)]
            self._step("counted")
            await outbox.delete(self.db, [d["_id"] for d, ok in zip(docs, done, strict=True) if ok])
            self._step("deleted")
            self.backoff[cc].succeeded()
            if len(docs) < per_call or not all(done):
                return

    async def _count(
        self, partner: FederationPartner, doc: dict[str, Any], result: pb.BatchResult, stats: RoundStats
    ) -> bool:
        """Count one answered batch, once whatever crashes (keyed by its id); False if not answered."""
        if result.status in (pb.BATCH_ACCEPTED, pb.BATCH_DUPLICATE):
            name, event = counters.FORWARDED, "forwarded"
        elif result.status == pb.BATCH_REFUSED:
            name, event = counters.REFUSED_BY_PARTNER, "refused_by_partner"
            log.warning("federation batch refused by partner",
                        extra={"partner": partner.label, "reason": result.reason[:200]})  # fmt: skip
        else:
            return False
        n = doc["n"]
        counts = counters.per_partner(name, partner.country_code, n)
        if await kpis.increment_once(self.db, self._today(), f"federation-out:{doc['_id']}", counts, {}):
            counters.CONTACTS.labels(partner.label, event).inc(n)
            stats.contacts[f"{event}_{partner.label}"] += n
        return True

    async def _drop_expired(self, cc: int, stats: RoundStats) -> None:
        """Drop (and count) the country's outbox documents older than the retention period."""
        before = self.clock.utcnow() - dt.timedelta(days=self.settings.contagious_period_days)
        old = await outbox.expired(self.db, cc, before)
        if not old:
            return
        label = counters.label(cc)
        for doc in old:
            counts = counters.per_partner(counters.DROPPED, cc, doc["n"])
            await kpis.increment_once(self.db, self._today(), f"federation-drop:{doc['_id']}", counts, {})
            counters.CONTACTS.labels(label, "dropped").inc(doc["n"])
            stats.contacts[f"dropped_{label}"] += doc["n"]
        await outbox.delete(self.db, [d["_id"] for d in old])
        log.warning("federation contacts dropped after the retention period",
                    extra={"country": label, "partner": cc in self.partners,
                           "contacts": sum(d["n"] for d in old)})  # fmt: skip
