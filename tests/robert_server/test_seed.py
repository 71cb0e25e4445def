"""``robert seed``: registrations with real sealed identities, created in bulk (issue 12)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys

import grpc
import pytest

from crypto_backend.identities import COLLECTION as IDENTITIES
from robert_server import registrations, seed
from robert_server.cli import main
from robert_server.crypto_client import CryptoError, RequestType
from tests.fixtures.crypto import CryptoService


async def test_seed_creates_registrations_whose_identities_open(crypto_service: CryptoService) -> None:
    svc = crypto_service
    epoch = svc.epoch_now()
    seen: list[int] = []
    assert svc.seed is not None
    result = await seed.seed(svc.db, svc.seed, 23, epoch, batch=10, in_flight=2, progress=seen.append)
    assert result.registrations == 23 and len(seen) == 3 and max(seen) == 23
    docs = await registrations.collection(svc.db).find({}).to_list()
    id_as = {d["_id"] for d in docs}
    assert len(id_as) == 23
    assert {d["_id"] async for d in svc.db[IDENTITIES].find({}, {"_id": 1})} == id_as
    fresh = registrations._new(docs[0]["_id"], epoch, None)
    assert all(d == {**fresh, "_id": d["_id"]} for d in docs)  # the same document as /register makes
    # A seeded identity is found and opens: only the (random) request MAC fails, not the lookup.
    id_a = docs[0]["_id"]
    with pytest.raises(CryptoError) as e:
        await svc.client.authenticate(
            svc.ebid(id_a, epoch), epoch, svc.clock.ntp_now(), secrets.token_bytes(32), RequestType.STATUS
        )
    assert e.value.reason == "INVALID_MAC"


@pytest.mark.parametrize("count", [0, 10_001])
async def test_bulk_creation_refuses_bad_counts(crypto_service: CryptoService, count: int) -> None:
    assert crypto_service.seed is not None
    with pytest.raises(CryptoError) as e:
        await crypto_service.seed.create_registrations(count)
    assert e.value.reason == "BAD_ARGUMENT"
    assert await crypto_service.db[IDENTITIES].count_documents({}) == 0


@pytest.mark.parametrize("args", [["--registrations", "0"], ["--registrations", "5", "--batch", "0"]])
def test_seed_command_refuses_bad_numbers(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["seed", *args]) == 2
    assert "must be" in capsys.readouterr().err


async def test_robert_seed_command_prints_what_it_created(
    crypto_service: CryptoService, mongo_uri: str
) -> None:
    svc = crypto_service
    env = {
        **os.environ,
        "ROBERT_MONGODB_URI": mongo_uri,
        "ROBERT_MONGODB_DATABASE": svc.db.name,
        "ROBERT_CRYPTO_ADDRESS": svc.address,
        "ROBERT_GRPC_TLS_DIR": str(svc.settings.grpc_tls_dir),  # robert seed presents the certificate `seed`
        "ROBERT_TIME_START": "20200601",
        "ROBERT_LOG_LEVEL": "ERROR",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "robert_server.cli", "seed", "--registrations", "25", "--batch", "10",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["registrations"] == 25
    assert await registrations.collection(svc.db).count_documents({}) == 25
    assert await svc.db[IDENTITIES].count_documents({}) == 25


async def test_a_failed_batch_is_drawn_again(
    crypto_service: CryptoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = crypto_service
    assert svc.seed is not None
    real = svc.seed.create_registrations
    failures = iter([True])  # the first call times out, as on an overloaded server

    async def flaky(count: int, **kw: object) -> list[bytes]:
        if next(failures, False):
            raise CryptoError(grpc.StatusCode.DEADLINE_EXCEEDED, "ERROR_REASON_UNSPECIFIED", "too slow")
        return await real(count, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(svc.seed, "create_registrations", flaky)
    result = await seed.seed(svc.db, svc.seed, 12, svc.epoch_now(), batch=5)
    assert result.registrations == 12
    assert await registrations.collection(svc.db).count_documents({}) == 12
