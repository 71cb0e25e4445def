"""Purge: unused codes are marked expired (and counted), deleted 2 days after expiry; used codes later."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock
from robert_common.settings import Settings
from robert_server.codes import make_verifier
from robert_server.codes.service import CodeService
from tests.fixtures.codes import make_code

HOUR, DAY = 3600, 86_400


async def test_purge_deletes_expired_then_used_codes(
    db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    service = CodeService(db, codes_settings, codes_clock)
    verifier = make_verifier(db, codes_settings, codes_clock)
    unused = await make_code(db, codes_settings, codes_clock, "short")
    used = await make_code(db, codes_settings, codes_clock, "short")
    held = await make_code(db, codes_settings, codes_clock, "short")
    jwt = await make_code(db, codes_settings, codes_clock, "jwt")
    long = await make_code(db, codes_settings, codes_clock, "long")
    for code in (used, jwt):
        res = await verifier.reserve(code, "192.0.2.1")
        assert res is not None and await verifier.confirm(res)
    assert await verifier.reserve(held, "192.0.2.1") is not None  # an upload that never finished
    coll = db["codes"]
    assert await coll.count_documents({}) == 5

    result = await service.purge()  # nothing has expired yet
    assert result["marked_expired"] == 0 and await coll.count_documents({}) == 5

    codes_clock.advance(2 * HOUR)
    result = await service.purge()
    assert result["marked_expired"] == 2  # the unused short code and the held one
    assert await coll.count_documents({"state": "expired"}) == 2
    assert (await service.purge())["marked_expired"] == 0  # counted once only
    assert await verifier.reserve(unused, "192.0.2.1") is None

    codes_clock.advance(2 * DAY)  # expired 2 days ago: gone; used short code: validity + 1 day passed
    result = await service.purge()
    assert result["deleted_expired"] == 2 and result["deleted_used"] == 1
    assert await coll.count_documents({}) == 2  # the long code (valid 8 days) and the used jti
    assert await verifier.reserve(used, "192.0.2.1") is None

    codes_clock.advance(6 * DAY)  # the long code (valid to the end of D+7, Paris) has expired
    assert (await service.purge())["marked_expired"] == 1
    assert await coll.count_documents({"state": "used"}) == 1  # the jti: 10 days + 1 not yet passed
    codes_clock.advance(4 * DAY)
    await service.purge()
    assert await coll.count_documents({}) == 0
    assert await verifier.reserve(jwt, "192.0.2.1") is None  # too old anyway: no reuse after purge
    assert await verifier.reserve(long, "192.0.2.1") is None
