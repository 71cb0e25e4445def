"""``robert seed --registrations N``: N registrations with real sealed identities, as fast as the database
allows (test and benchmark databases of national size).

Not N /register calls: the crypto service creates identities in bulk (``CreateRegistrations``: random
per-phone keys sealed under the KEK, one ``insert_many`` per call) and the registrations follow with one
``insert_many`` per call. A few calls run at once so that the crypto service seals while the database
writes. The keys of seeded phones never leave the crypto service: they are population, not actors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from robert_common.clock import Clock, ServiceTime
from robert_common.logs import setup_logging
from robert_common.mongo import open_database, require_uri
from robert_common.settings import SettingsError, load_settings
from robert_server import registrations
from robert_server.crypto_client import CryptoClient, CryptoError

log = logging.getLogger("robert.seed")

BATCH = 2_000  # identities per call (the service takes 10 000): each insert well within socket timeouts
IN_FLIGHT = 2  # calls at once: one seals while the other's documents are written
ATTEMPTS = 3  # tries of one batch
CALL_DEADLINE = 300.0  # seconds for one call (a slow embedded database writes ~2 500 documents/s)


@dataclass(frozen=True, slots=True)
class SeedResult:
    registrations: int
    seconds: float


async def seed(
    db: AsyncDatabase,
    crypto: CryptoClient,
    count: int,
    epoch_id: int,
    *,
    batch: int = BATCH,
    in_flight: int = IN_FLIGHT,
    progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Create ``count`` identities and their registrations (registered at ``epoch_id``)."""
    started = time.perf_counter()
    sizes = [min(batch, count - k) for k in range(0, count, batch)]
    done = 0
    gate = asyncio.Semaphore(in_flight)

    async def one(size: int) -> None:
        nonlocal done
        async with gate:
            for attempt in range(ATTEMPTS):
                try:
                    id_as = await crypto.create_registrations(size, deadline=CALL_DEADLINE)
                    await registrations.create_many(db, id_as, epoch_id)
                    break
                except (CryptoError, PyMongoError) as e:
                    # An overloaded server timed out: draw the batch again (identities stored by the failed
                    # attempt stay unused: harmless population). Bad arguments are not retried.
                    if attempt == ATTEMPTS - 1 or (isinstance(e, CryptoError) and e.reason == "BAD_ARGUMENT"):
                        raise
                    log.warning("seed batch failed; retrying", extra={"error": type(e).__name__})
            done += len(id_as)
            if progress:
                progress(done)

    await asyncio.gather(*(one(size) for size in sizes))
    return SeedResult(done, time.perf_counter() - started)


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("seed", help="create N registrations with real sealed identities (tests, benchmarks)")
    p.add_argument("--registrations", type=int, required=True, metavar="N", help="how many to create")
    p.add_argument("--batch", type=int, default=BATCH, help=f"identities per crypto call (default {BATCH})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.registrations < 1:
        raise SettingsError("--registrations must be a positive number")
    if not 1 <= args.batch <= 10_000:
        raise SettingsError("--batch must be 1 to 10000")
    settings = load_settings()
    setup_logging(settings.log_level)
    require_uri(settings, "robert seed")
    epoch_id = ServiceTime(settings.time_start_date, Clock(settings.clock_shift_file)).current_epoch()

    async def main() -> SeedResult:
        async with (
            open_database(settings, "robert seed") as db,
            CryptoClient.from_settings(settings, "seed") as crypto,  # its certificate: bulk creation only
        ):
            await registrations.ensure_indexes(db)
            return await seed(db, crypto, args.registrations, epoch_id, batch=args.batch)

    result = asyncio.run(main())
    rate = result.registrations / result.seconds if result.seconds else 0.0
    print(json.dumps({"registrations": result.registrations, "seconds": round(result.seconds, 1),
                      "per_second": round(rate)}))  # fmt: skip
    return 0
