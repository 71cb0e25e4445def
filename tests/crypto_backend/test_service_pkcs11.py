"""The crypto service's own tests, run again with the PKCS#11 key store (a SoftHSM2 token): the
service behaves the same whichever store holds its keys."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from crypto_backend.keystore.pkcs11 import Pkcs11KeyStore
from crypto_backend.service import CryptoServer
from robert_common.clock import ManualClock, ServiceTime
from robert_common.settings import load_settings
from robert_server.crypto_client import CryptoClient
from tests.crypto_backend import test_service as file_store_tests
from tests.crypto_backend.softhsm import PIN, SoftHsmToken
from tests.fixtures.crypto import DEFAULT_NOW, PAST_KEY_DAYS, CryptoService


@pytest.fixture
async def hsm_crypto_service(
    softhsm: SoftHsmToken, db: AsyncDatabase, mongo_uri: str, tmp_path: Path, test_pki: Path
) -> AsyncIterator[CryptoService]:
    """The ``crypto_service`` fixture, with its keys in a token instead of a file."""
    clock = ManualClock(DEFAULT_NOW)
    settings = load_settings(
        data_dir=tmp_path, mongodb_uri=mongo_uri, mongodb_database=db.name, crypto_mongodb_database=db.name,
        crypto_listen="127.0.0.1:0", time_start="20200601", grpc_tls_dir=test_pki,
    )  # fmt: skip
    keystore = Pkcs11KeyStore.create(softhsm.module, softhsm.label, PIN)
    today = clock.utcnow().date()
    keystore.rotate(
        today - dt.timedelta(days=PAST_KEY_DAYS), PAST_KEY_DAYS + settings.bundle_days + 1, 10_000
    )
    server = CryptoServer(settings, clock, keystore, db, auto_rotate=True)
    address = await server.start()
    settings = settings.model_copy(update={"crypto_address": address})
    client = CryptoClient.from_settings(settings, "api")  # mutual TLS, as the crypto_service fixture
    matcher = CryptoClient.from_settings(settings, "matcher")
    try:
        service_time = ServiceTime(settings.time_start_date, clock)
        yield CryptoService(
            address=address, settings=settings, clock=clock, time=service_time,
            keystore=keystore, client=client, matcher=matcher, server=server, db=db,  # type: ignore[arg-type]
        )  # fmt: skip
    finally:
        await client.close()
        await matcher.close()
        await server.stop(None)
        keystore.close()


SAME_TESTS: list[Callable[[CryptoService], Awaitable[None]]] = [
    file_store_tests.test_registration_then_status_with_bundle,
    file_store_tests.test_bundle_crosses_days_and_auto_rotates,  # day keys created in the token
    file_store_tests.test_request_mac_errors,
    file_store_tests.test_unknown_identity_and_no_day_key,
    file_store_tests.test_delete_identity,
    file_store_tests.test_validate_contacts_batch,
]


@pytest.mark.parametrize("same_test", SAME_TESTS, ids=[t.__name__ for t in SAME_TESTS])
async def test_service_on_a_pkcs11_token(
    same_test: Callable[[CryptoService], Awaitable[None]], hsm_crypto_service: CryptoService
) -> None:
    await same_test(hsm_crypto_service)
    assert isinstance(hsm_crypto_service.keystore, Pkcs11KeyStore)


async def test_bad_phone_keys_are_refused_by_the_token_store(hsm_crypto_service: CryptoService) -> None:
    for key in (b"", b"\x30\x03abc", b"\x00" * 91):
        await file_store_tests.test_registration_bad_keys(hsm_crypto_service, key)
