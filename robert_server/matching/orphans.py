"""Identities left without a registration, deleted after a grace period (issue 10 item 7).

``/register`` creates the identity in the crypto database, then the registration in the API database. If
the second step fails (a database outage) the API deletes the identity, with retries; when even that
fails the identity is left behind, an orphan: keys of a phone that never got its answer. The daily job
(:mod:`.daily`) finds them: the crypto service lists the id_A of identities older than
``identity_orphan_grace_hours`` a page at a time (``ListIdentities``: only it reads its database), this
worker asks the API database which of them have a registration (``$in`` of 25 ids at a time) and asks
the crypto service to delete the others. The grace period leaves registrations in flight alone.

A worker pointed at the wrong API database would see every identity as an orphan: a page where more than
:data:`MAX_ORPHAN_SHARE` of at least :data:`MIN_PAGE_FOR_SHARE` ids are orphans stops the pass, unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from robert_server import registrations
from robert_server.crypto_client import CryptoClient

log = logging.getLogger("robert.matcher")

PAGE = 500  # id_A listed per ListIdentities call
MAX_ORPHAN_SHARE = 0.5
MIN_PAGE_FOR_SHARE = 20


@dataclass
class Reconciliation:
    scanned: int = 0
    deleted: int = 0
    stopped: bool = False  # the share guard stopped the pass


async def delete_orphan_identities(
    db: AsyncDatabase, crypto: CryptoClient, created_before: float, page: int = PAGE
) -> Reconciliation:
    """Delete the identities created before ``created_before`` (Unix s) that have no registration."""
    out = Reconciliation()
    after = b""
    while True:
        id_as = await crypto.list_identities(after, created_before, page)
        if not id_as:
            return out
        after = id_as[-1]
        out.scanned += len(id_as)
        known = await registrations.existing(db, id_as)
        orphans = [i for i in id_as if i not in known]
        if len(id_as) >= MIN_PAGE_FOR_SHARE and len(orphans) > MAX_ORPHAN_SHARE * len(id_as):
            log.error(
                "identity reconciliation stopped: most identities have no registration (wrong database?)",
                extra={"scanned": len(id_as), "orphans": len(orphans)},
            )
            out.stopped = True
            return out
        for id_a in orphans:
            if await crypto.delete_identity(id_a):
                out.deleted += 1
