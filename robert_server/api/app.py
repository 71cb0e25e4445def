"""The phone API application: ``create_app`` wires the services and the routes of ``/api/v6``.

Resources (database client, crypto client, captcha service) are opened and closed in the app's
``cleanup_ctx``, each registered for closing as soon as it is open (an AsyncExitStack: a failure later in
the start-up closes it); handlers reach them through ``request.app[SERVICES]``. An endpoint with
resources of its own sets them up itself (``status.setup``: the /status micro-batcher, under
``status.STATUS_BATCHER``). Errors become status codes in one middleware (robert_server/api/errors.py);
metrics are counted in another.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import web
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import Clock, ServiceTime
from robert_common.mongo import mongo_client
from robert_common.settings import Settings
from robert_server import codes, registrations
from robert_server.api import captcha, delivery, register, report, status, unregister, uploads
from robert_server.api import clock as clock_api
from robert_server.api.admission import Admission
from robert_server.api.errors import DB_UNAVAILABLE, make_error_middleware, server_header
from robert_server.api.metrics import metrics_middleware
from robert_server.api.services import SERVICES, Services
from robert_server.captcha import make_captcha
from robert_server.client_config import ConfigCache
from robert_server.codes.verifier import CodeVerifier
from robert_server.crypto_client import CryptoClient
from robert_server.tokens import TokenSigner

log = logging.getLogger("robert.api")

PREFIX = "/api/v6"
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_PATH.read_bytes(), content_type="application/yaml")


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{PREFIX}/captcha", captcha.handle_create, name="captcha")
    app.router.add_get(f"{PREFIX}/captcha/{{captcha_id}}/image", captcha.handle_image, name="captcha_image")
    app.router.add_get(f"{PREFIX}/captcha/{{captcha_id}}/audio", captcha.handle_audio, name="captcha_audio")
    app.router.add_post(f"{PREFIX}/register", register.handle, name="register")
    app.router.add_post(f"{PREFIX}/status", status.handle, name="status")
    app.router.add_post(f"{PREFIX}/report", report.handle, name="report")
    app.router.add_post(f"{PREFIX}/unregister", unregister.handle_unregister, name="unregister")
    app.router.add_post(
        f"{PREFIX}/deleteExposureHistory", unregister.handle_delete_history, name="deleteExposureHistory"
    )
    app.router.add_get(f"{PREFIX}/clock", clock_api.handle, name="clock")
    app.router.add_get(f"{PREFIX}/openapi.yaml", _openapi, name="openapi")


def create_app(
    settings: Settings,
    *,
    clock: Clock,
    db: AsyncDatabase | None = None,
    crypto: CryptoClient | None = None,
    verifier: CodeVerifier | None = None,
) -> web.Application:
    """The phone API. Unset services are built from the settings when the app starts."""
    app = web.Application(
        middlewares=[
            metrics_middleware,
            Admission(settings.api_max_in_progress, settings.api_retry_after_max).middleware(),
            make_error_middleware(settings.api_request_deadline),
        ],
        client_max_size=settings.report_max_body_bytes + 1024,  # per-endpoint limits in validation.py
    )
    app.on_response_prepare.append(server_header)
    add_routes(app)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        # Each resource is registered for closing as soon as it is open: a failure at any later step
        # of the start-up closes what was opened before it (in reverse order), then propagates.
        async with AsyncExitStack() as opened:
            if db is None:
                if not settings.mongodb_uri:
                    raise ValueError(
                        "the API needs ROBERT_MONGODB_URI (robert up starts the embedded database)"
                    )
                mongo = mongo_client(settings.mongodb_uri)
                opened.push_async_callback(mongo.close)
                database = mongo[settings.mongodb_database]
            else:
                database = db
            crypto_client = crypto
            if crypto_client is None:
                crypto_client = CryptoClient.from_settings(settings, "api")
                opened.push_async_callback(crypto_client.close)
            captcha_service = await make_captcha(settings, database, clock)
            opened.push_async_callback(captcha_service.close)
            try:
                await registrations.ensure_indexes(database)
            except DB_UNAVAILABLE:
                log.warning("database unreachable at start: indexes not checked")
            app[SERVICES] = Services(
                settings=settings,
                time=ServiceTime(settings.time_start_date, clock),
                db=database,
                crypto=crypto_client,
                # no fallback: a code package that cannot be loaded stops the start-up
                verifier=verifier or codes.make_verifier(database, settings, clock),
                tokens=TokenSigner.from_settings(settings),
                captcha=captcha_service,
                config=ConfigCache(database),
            )
            yield

    app.cleanup_ctx.append(resources)
    delivery.setup(app)  # undo tasks waited for before the services close
    uploads.setup(app)
    status.setup(app)  # after the services it uses: closed before them
    report.setup(app)
    return app
