"""``robert federation``: the federation service, the forwarder, and development certificates.

``robert federation serve``     the Federation gRPC service partners call (ROBERT_FEDERATION_LISTEN)
``robert federation forward``   deliver the outbox to the partners, a round every ROBERT_FEDERATION_INTERVAL
                                seconds (``--once``: one round, its figures as JSON)
``robert federation dev-cert``  a development CA and federation certificate for one country

The service is a process of its own, not part of the phone API: it faces other countries, not phones,
on its own port and certificates, holds no key, and can be stopped or scaled without touching the API.
``robert up`` starts both when ROBERT_FEDERATION_PARTNERS is set.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from robert_common.clock import Clock
from robert_common.logs import setup_logging
from robert_common.mongo import open_database, require_uri
from robert_common.settings import Settings, SettingsError, load_settings
from robert_common.signals import stop_event

log = logging.getLogger("robert.federation")

PURGE_INTERVAL = 3600.0


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("federation", help="exchange contacts with partner countries' servers")
    fsub = p.add_subparsers(dest="federation_command", required=True, metavar="ACTION")
    serve = fsub.add_parser("serve", help="serve the Federation gRPC service partners deliver to")
    serve.set_defaults(func=run_serve)
    forward = fsub.add_parser("forward", help="deliver the outbox of foreign contacts to the partners")
    forward.add_argument("--once", action="store_true", help="one round, print its figures as JSON, and exit")
    forward.set_defaults(func=run_forward)
    cert = fsub.add_parser("dev-cert", help="write a development CA and federation certificate of a country")
    cert.add_argument("--country", required=True, help="country code, e.g. 0x21 or 33")
    cert.add_argument(
        "--dir", required=True, type=Path, help="folder for ca.pem, federation.pem, federation.key"
    )
    cert.set_defaults(func=run_dev_cert)


def _metrics(port: int | None, settings: Settings) -> None:
    if port is not None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=settings.metrics_host)


async def serve(settings: Settings) -> None:
    from robert_server.federation import received, service

    clock = Clock(settings.clock_shift_file)
    async with open_database(settings, "robert federation serve") as db:
        server, port = await service.start_server(db, settings, clock)
        _metrics(settings.federation_metrics_port, settings)
        stop = stop_event()
        try:
            while not stop.is_set():
                before = clock.utcnow() - dt.timedelta(days=settings.contagious_period_days + 1)
                try:
                    await received.purge(db, before)
                except Exception as e:  # noqa: BLE001 - keep serving; retried at the next turn
                    log.warning("federation purge failed", extra={"error": type(e).__name__})
                try:
                    await asyncio.wait_for(stop.wait(), timeout=PURGE_INTERVAL)
                except TimeoutError:
                    pass
        finally:
            await server.stop(5)


async def forward(settings: Settings, *, once: bool) -> dict[str, Any]:
    from robert_server.federation.forwarder import Forwarder

    async with open_database(settings, "robert federation forward") as db:
        forwarder = Forwarder(db, settings, Clock(settings.clock_shift_file))
        try:
            if once:
                stats = await forwarder.run_once(sweep=True)
                return {"failures": stats.failures, **stats.contacts}
            _metrics(settings.federation_forwarder_metrics_port, settings)
            log.info("federation forwarder started", extra={"partners": len(forwarder.partners)})
            await forwarder.run_forever(stop_event())
            return {}
        finally:
            await forwarder.close()


def _settings(command: str) -> Settings:
    settings = load_settings()
    setup_logging(settings.log_level)
    require_uri(settings, command)
    if not settings.federation_partners:
        raise SettingsError("invalid settings:\n  ROBERT_FEDERATION_PARTNERS: no partner is configured")
    return settings


def run_serve(args: argparse.Namespace) -> int:
    asyncio.run(serve(_settings("robert federation serve")))
    return 0


def run_forward(args: argparse.Namespace) -> int:
    result = asyncio.run(forward(_settings("robert federation forward"), once=args.once))
    if args.once:
        print(json.dumps(result, sort_keys=True))
    return 0


def run_dev_cert(args: argparse.Namespace) -> int:
    from robert_server.federation.tls import create_country_pki

    try:
        cc = int(args.country, 0)
    except ValueError:
        raise SettingsError("--country: a country code, e.g. 0x21 or 33") from None
    if not 0 <= cc <= 255:
        raise SettingsError("--country: a country code is 0 to 255")
    try:
        pki = create_country_pki(args.dir, cc)
    except FileExistsError as e:
        raise SettingsError(str(e)) from None
    print(f"CA (give it to partners): {pki.ca}\ncertificate: {pki.cert}\nkey: {pki.key}")
    return 0
