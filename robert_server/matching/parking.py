"""Contact batches that keep failing: parked as dead letters, and put back by an operator (issue 10).

Up to ``claim_batches`` batches share one ValidateContacts call, so one bad batch (a corrupt document, a
contact the crypto service refuses) used to fail its whole group, again at every lease, forever. The
worker (:mod:`.worker`) now splits a failing group in halves until the bad batch is alone; a batch alone
that fails on its ``max_attempts``-th claim, or that comes back after that many claims (it crashed its
worker), is moved to :mod:`robert_server.dead_letters`: copied there first, then deleted from
``contacts`` if this worker still holds it (a crash in between leaves it in both; parking is idempotent
and a retry puts it back once).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from robert_server import contacts, dead_letters
from robert_server.matching.context import PassContext

log = logging.getLogger("robert.matcher")


async def park(ctx: PassContext, batch: Mapping[str, Any], reason: str) -> bool:
    """Move ``batch`` (held by this worker) to the dead letters. True if this worker moved it."""
    with ctx.timed("db"):
        await dead_letters.park(ctx.db, batch, reason, ctx.time.clock.utcnow())
        moved = await contacts.complete_batch(ctx.db, batch["_id"], ctx.owner)
    if moved:
        ctx.stats.counters["batchesParked"] += 1
        log.error(
            "contact batch parked as a dead letter (see robert matcher dead-letters)",
            extra={"batch": batch["_id"], "attempts": batch.get("attempts", 0), "reason": reason},
        )
    return moved


async def retry(db: AsyncDatabase, batch_id: str) -> bool:
    """Put a dead letter back for matching, its attempts reset. False if there is no such dead letter."""
    doc = await dead_letters.get(db, batch_id)
    if doc is None:
        return False
    await contacts.restore_batch(db, doc)
    await dead_letters.delete(db, batch_id)
    log.info("dead letter put back for matching", extra={"batch": batch_id})
    return True


def reason_of(error: BaseException) -> str:
    """What failed, for the dead letter and the log: a type or a crypto reason, never a message."""
    reason = getattr(error, "reason", None)
    code = getattr(error, "code", None)
    if isinstance(reason, str) and code is not None:
        return f"{type(error).__name__}:{getattr(code, 'name', code)}:{reason}"
    return type(error).__name__
