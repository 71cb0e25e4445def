"""The API's start-up is exception-safe: a failure at any step closes what was opened before it, and a
code package that cannot be loaded stops the start-up (no verifier that silently refuses every code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pymongo.errors import InvalidOperation

from robert_common.clock import ManualClock
from robert_common.settings import load_settings
from robert_server import codes
from robert_server.api import app as app_module
from robert_server.crypto_client import CryptoClient
from robert_server.tokens import TokenKeyError


class Opened:
    """What the app opened during one start-up, and whether each was closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mongo: list[Any] = []
        self.crypto: list[Any] = []
        self.captcha: list[Any] = []
        self.closed: list[str] = []
        real_mongo, real_captcha, opened = app_module.mongo_client, app_module.make_captcha, self

        def mongo_client(uri: str) -> Any:
            client = real_mongo(uri)
            opened.mongo.append(client)
            return client

        class TrackedCrypto(CryptoClient):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                opened.crypto.append(self)

            async def close(self) -> None:
                opened.closed.append("crypto")
                await super().close()

        async def make_captcha(*args: Any) -> Any:
            service = await real_captcha(*args)
            real_close = service.close

            async def close() -> None:
                opened.closed.append("captcha")
                await real_close()

            service.close = close  # type: ignore[method-assign]
            opened.captcha.append(service)
            return service

        monkeypatch.setattr(app_module, "mongo_client", mongo_client)
        monkeypatch.setattr(app_module, "CryptoClient", TrackedCrypto)
        monkeypatch.setattr(app_module, "make_captcha", make_captcha)

    async def mongo_closed(self) -> bool:
        (client,) = self.mongo
        try:
            await client.admin.command("ping")
        except InvalidOperation:  # "Cannot use AsyncMongoClient after close"
            return True
        await client.close()
        return False


def _settings(tmp_path: Path, mongo_uri: str, test_pki: Path, **overrides: Any) -> Any:
    return load_settings(
        data_dir=tmp_path, mongodb_uri=mongo_uri, mongodb_database="t_startup", grpc_tls_dir=test_pki,
        crypto_address="127.0.0.1:9", **overrides,
    )  # fmt: skip


async def _start(settings: Any) -> web.AppRunner:
    runner = web.AppRunner(app_module.create_app(settings, clock=ManualClock(1_700_000_000)))
    await runner.setup()
    return runner


async def test_a_clean_start_and_stop_close_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mongo_uri: str, test_pki: Path
) -> None:
    opened = Opened(monkeypatch)
    runner = await _start(_settings(tmp_path, mongo_uri, test_pki))
    assert opened.closed == []
    await runner.cleanup()
    assert opened.closed == ["captcha", "crypto"] and await opened.mongo_closed()


@pytest.mark.parametrize("step", ["captcha", "tokens"])
async def test_a_failed_start_closes_what_it_opened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mongo_uri: str, test_pki: Path, step: str
) -> None:
    opened = Opened(monkeypatch)
    if step == "captcha":  # fails after the database client and the crypto channel are open
        settings = _settings(tmp_path, mongo_uri, test_pki, captcha="external")
    else:  # fails after the captcha service too
        settings = _settings(tmp_path, mongo_uri, test_pki, report_token_key_file=tmp_path / "missing.pem")
    with pytest.raises((ValueError, TokenKeyError)):
        await _start(settings)
    assert len(opened.crypto) == 1 and await opened.mongo_closed()
    assert opened.closed == ([] if step == "captcha" else ["captcha"]) + ["crypto"]


async def test_a_code_package_that_cannot_load_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mongo_uri: str, test_pki: Path
) -> None:
    """It used to become a verifier refusing every code, with the API up and every /report failing."""
    opened = Opened(monkeypatch)
    monkeypatch.delattr(codes, "make_verifier")  # what `from robert_server.codes import make_verifier` hit
    with pytest.raises((ImportError, AttributeError)):
        await _start(_settings(tmp_path, mongo_uri, test_pki))
    assert opened.closed == ["captcha", "crypto"] and await opened.mongo_closed()
    assert not hasattr(app_module, "RefusingVerifier")
