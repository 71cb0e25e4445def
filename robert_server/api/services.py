"""What every phone API handler is given: the injected services, built once by ``create_app``.

:class:`Services` holds the settings, the protocol time, the database, the crypto client, the code
verifier, the JWT signer, the captcha service and the client config cache; a handler reaches it with
``request.app[SERVICES]``. It holds no protocol step (authentication is robert_server/api/auth.py) and
knows no endpoint (an endpoint with resources of its own, like the /status micro-batcher, keeps them
under its own app key).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ServiceTime
from robert_common.settings import Settings
from robert_server.captcha import CaptchaService
from robert_server.client_config import ConfigCache
from robert_server.codes.verifier import CodeVerifier
from robert_server.crypto_client import CryptoClient
from robert_server.tokens import TokenSigner


@dataclass
class Services:
    settings: Settings
    time: ServiceTime
    db: AsyncDatabase
    crypto: CryptoClient
    verifier: CodeVerifier
    tokens: TokenSigner
    captcha: CaptchaService
    config: ConfigCache


SERVICES = web.AppKey("services", Services)
