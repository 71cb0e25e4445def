"""The CodeIssuer service over real gRPC (127.0.0.1, random port) with and without valid credentials."""

from __future__ import annotations

import datetime as dt
import re

import grpc
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock
from robert_common.rpc import codes_pb2 as pb
from robert_common.settings import Settings
from robert_server.codes import issuers, make_verifier
from tests.fixtures.codes import CodeIssuerHandle, make_code

SOURCE = "192.0.2.1"


@pytest.mark.parametrize("token", ["", "not-a-token", None])
async def test_calls_without_a_valid_token_are_unauthenticated(
    code_issuer: CodeIssuerHandle, token: str | None
) -> None:
    metadata = () if token is None else code_issuer.auth(token)
    calls = [
        code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=metadata),
        code_issuer.stub.RevokeCode(pb.RevokeCodeRequest(code="ABCDEF"), metadata=metadata),
        code_issuer.stub.GetDailyCounts(pb.GetDailyCountsRequest(from_date="2024-03-10"), metadata=metadata),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stream = code_issuer.stub.IssueLongCodes(pb.IssueLongCodesRequest(count=3), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in stream:
            pass
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await code_issuer.service.db["codes"].count_documents({}) == 0  # nothing issued


async def test_revoked_issuer_is_unauthenticated(code_issuer: CodeIssuerHandle, db: AsyncDatabase) -> None:
    token = await issuers.add(db, "lab-2", code_issuer.service.now())
    await code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=code_issuer.auth(token))
    assert await issuers.revoke(db, "lab-2", code_issuer.service.now())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=code_issuer.auth(token))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details() is not None and token not in e.value.details()


async def test_issue_short_code_then_report_with_it(
    code_issuer: CodeIssuerHandle, db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    issued = await code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=code_issuer.auth())
    assert re.fullmatch(r"[A-Z0-9]{6}", issued.code)
    assert issued.kind == pb.CODE_KIND_SHORT
    assert issued.valid_from == int(codes_clock.now()) and issued.valid_until - issued.valid_from == 3600
    assert issued.qr_payload == f"{codes_settings.codes_app_link_base}?code={issued.code}&type=2"
    doc = await db["codes"].find_one({})
    assert doc is not None and doc["issuer"] == "test-issuer" and doc["kind"] == "short"
    verifier = make_verifier(db, codes_settings, codes_clock)
    res = await verifier.reserve(issued.code, SOURCE)
    assert res is not None and await verifier.confirm(res)


async def test_issue_long_code_lot_streams_with_a_lot_id(
    code_issuer: CodeIssuerHandle, db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    request = pb.IssueLongCodesRequest(count=1203, valid_from_date="2024-03-10", lot_id="sidep-lot-7")
    codes = [c async for c in code_issuer.stub.IssueLongCodes(request, metadata=code_issuer.auth())]
    assert len(codes) == 1203 and len({c.code for c in codes}) == 1203
    assert {c.lot_id for c in codes} == {"sidep-lot-7"}
    first = codes[0]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first.code)
    assert first.kind == pb.CODE_KIND_LONG and first.qr_payload.endswith(f"?code={first.code}&type=1")
    paris = dt.datetime(2024, 3, 10, 0, 0, tzinfo=dt.UTC) - dt.timedelta(hours=1)
    assert first.valid_from == int(paris.timestamp())
    assert first.valid_until == int((paris + dt.timedelta(days=8)).timestamp())
    assert await db["codes"].count_documents({"lot": "sidep-lot-7"}) == 1203
    verifier = make_verifier(db, codes_settings, codes_clock)
    assert await verifier.reserve(codes[-1].code, SOURCE) is not None
    auto = [
        c
        async for c in code_issuer.stub.IssueLongCodes(
            pb.IssueLongCodesRequest(count=2), metadata=code_issuer.auth()
        )
    ]
    assert len(auto) == 2 and auto[0].lot_id and auto[0].lot_id == auto[1].lot_id != "sidep-lot-7"


@pytest.mark.parametrize(
    "request_",
    [
        pb.IssueLongCodesRequest(count=0),
        pb.IssueLongCodesRequest(count=100_001),
        pb.IssueLongCodesRequest(count=1, valid_from_date="10/03/2024"),
        pb.IssueLongCodesRequest(count=1, valid_from_date="2020-01-01"),
        pb.IssueLongCodesRequest(count=1, lot_id="bad lot/../id"),
    ],
)
async def test_bad_long_code_requests_are_invalid_argument(
    code_issuer: CodeIssuerHandle, request_: pb.IssueLongCodesRequest
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in code_issuer.stub.IssueLongCodes(request_, metadata=code_issuer.auth()):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_issuer.service.db["codes"].count_documents({}) == 0


async def test_revoke_code_over_grpc(
    code_issuer: CodeIssuerHandle, db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    verifier = make_verifier(db, codes_settings, codes_clock)
    admin = await issuers.add(db, "ops", code_issuer.service.now(), admin=True)  # codes of any issuer
    for kind in ("short", "long", "jwt"):
        code = await make_code(db, codes_settings, codes_clock, kind)
        answer = await code_issuer.stub.RevokeCode(
            pb.RevokeCodeRequest(code=code), metadata=code_issuer.auth(admin)
        )
        assert answer.revoked
        assert await verifier.reserve(code, SOURCE) is None
    unknown = await code_issuer.stub.RevokeCode(
        pb.RevokeCodeRequest(code="QQQQQQ"), metadata=code_issuer.auth()
    )
    assert not unknown.revoked


async def test_an_issuer_revokes_only_its_own_codes_unless_admin(
    code_issuer: CodeIssuerHandle, db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    """Issue 10 item 8: any issuer token could revoke another issuer's code."""
    other = await issuers.add(db, "other-lab", code_issuer.service.now())
    admin = await issuers.add(db, "ops", code_issuer.service.now(), admin=True)

    async def revoke(code: str, token: str) -> bool:
        answer = await code_issuer.stub.RevokeCode(
            pb.RevokeCodeRequest(code=code), metadata=code_issuer.auth(token)
        )
        return answer.revoked

    mine = [
        (await code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=code_issuer.auth())).code
        for _ in range(2)
    ]
    assert not await revoke(mine[0], other)  # looks like an unknown code: nothing learnt
    assert await revoke(mine[0], code_issuer.token)
    assert await revoke(mine[1], admin)
    theirs = (
        await code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=code_issuer.auth(other))
    ).code
    assert not await revoke(theirs, code_issuer.token)
    verifier = make_verifier(db, codes_settings, codes_clock)
    assert await verifier.reserve(theirs, SOURCE) is not None  # still valid


async def test_a_second_code_issuer_on_the_same_port_fails_loudly(
    code_issuer: CodeIssuerHandle, db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    """Issue 10 item 8: with SO_REUSEPORT a stray second instance silently shared the port."""
    from robert_common.settings import SettingsError
    from robert_server.codes.server import start_server

    with pytest.raises(SettingsError, match="cannot bind"):
        await start_server(db, codes_settings, codes_clock, listen=code_issuer.address)


async def test_daily_counts_issued_used_expired(
    code_issuer: CodeIssuerHandle, db: AsyncDatabase, codes_settings: Settings, codes_clock: ManualClock
) -> None:
    auth = code_issuer.auth()
    shorts = [
        await code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=auth) for _ in range(3)
    ]
    lot = [c async for c in code_issuer.stub.IssueLongCodes(pb.IssueLongCodesRequest(count=4), metadata=auth)]
    verifier = make_verifier(db, codes_settings, codes_clock)
    for code in (shorts[0].code, lot[0].code, await make_code(db, codes_settings, codes_clock, "jwt")):
        res = await verifier.reserve(code, SOURCE)
        assert res is not None and await verifier.confirm(res)
    codes_clock.advance(2 * 3600)  # the other short codes expire (same UTC day)
    await code_issuer.service.purge()
    answer = await code_issuer.stub.GetDailyCounts(
        pb.GetDailyCountsRequest(from_date="2024-03-10"), metadata=auth
    )
    got = {(c.date, c.kind): (c.issued, c.used, c.expired) for c in answer.counts}
    assert got == {
        ("2024-03-10", pb.CODE_KIND_SHORT): (3, 1, 2),
        ("2024-03-10", pb.CODE_KIND_LONG): (4, 1, 0),
        ("2024-03-10", pb.CODE_KIND_JWT): (0, 1, 0),
    }
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await code_issuer.stub.GetDailyCounts(pb.GetDailyCountsRequest(from_date="yesterday"), metadata=auth)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
