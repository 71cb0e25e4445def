"""``robert api`` (the phone API and its internal app) and ``robert config set|get|list|delete``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from robert_common import heap
from robert_common.clock import Clock
from robert_common.logs import setup_logging
from robert_common.mongo import open_database, require_uri
from robert_common.settings import load_settings
from robert_common.signals import stop_event
from robert_common.tls import http_ssl_context

log = logging.getLogger("robert.api")


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("api", help="serve the phone API (/api/v6) and the internal app (health, metrics)")
    p.set_defaults(func=run_api)

    c = sub.add_parser("config", help="edit the client configuration sent to phones")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    s = csub.add_parser("set", help="set NAME to VALUE (VALUE is parsed as JSON when it is valid JSON)")
    s.add_argument("name")
    s.add_argument("value")
    s.add_argument("--string", action="store_true", help="store VALUE as a string, never as JSON")
    g = csub.add_parser("get", help="print the value of NAME")
    g.add_argument("name")
    csub.add_parser("list", help="print every client setting")
    d = csub.add_parser("delete", help="remove NAME")
    d.add_argument("name")
    c.set_defaults(func=run_config)


async def serve(settings: Any, clock: Clock) -> None:
    from robert_server.api.app import create_app
    from robert_server.api.internal import create_internal_app
    from robert_server.api.runner import ApiRunner

    heap.watch_pauses()
    ssl_context = http_ssl_context(settings)  # TLS 1.2/1.3 when ROBERT_HTTP_TLS_CERT is set
    api = create_app(settings, clock=clock)
    internal = create_internal_app(api)
    runners = [ApiRunner(api, access_log=None), ApiRunner(internal, access_log=None)]
    # Several API processes (ROBERT_API_PROCESSES) share the phone port: the kernel spreads connections
    # over them. One process alone binds it exclusively, so that a stray second one fails loudly.
    reuse_port = settings.api_processes > 1
    try:  # a failed start-up closes what had started (each app's cleanup contexts that ran)
        for r in runners:
            await r.setup()
        await web.TCPSite(
            runners[0], settings.http_host, settings.http_port, ssl_context=ssl_context, reuse_port=reuse_port
        ).start()
        await web.TCPSite(runners[1], settings.metrics_host, settings.metrics_port).start()
    except BaseException:
        for r in reversed(runners):
            await r.cleanup()
        raise
    log.info(
        "phone API listening",
        extra={
            "port": settings.http_port,
            "metrics_port": settings.metrics_port,
            "captcha": settings.captcha,
            "tls": ssl_context is not None,
        },
    )
    heap.settle()  # no full garbage collection walks the start-up objects again (robert_common/heap.py)
    try:
        await stop_event().wait()
    finally:
        for r in reversed(runners):
            await r.cleanup()


def run_api(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    require_uri(settings, "robert api")
    asyncio.run(serve(settings, Clock(settings.clock_shift_file)))
    return 0


def _parse_value(text: str, as_string: bool) -> Any:
    if as_string:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _config(args: argparse.Namespace) -> int:
    from robert_server import client_config

    settings = load_settings()
    async with open_database(settings, "robert config") as db:
        if args.config_command == "set":
            await client_config.set_value(db, args.name, _parse_value(args.value, args.string))
        elif args.config_command == "get":
            value = await client_config.get(db, args.name)
            if value is None:
                print(f"robert config: no setting named {args.name}")
                return 1
            print(json.dumps(value))
        elif args.config_command == "delete":
            if not await client_config.delete(db, args.name):
                print(f"robert config: no setting named {args.name}")
                return 1
        else:
            for item in await client_config.list_all(db):
                print(f"{item['name']} = {json.dumps(item['value'])}")
        return 0


def run_config(args: argparse.Namespace) -> int:
    return asyncio.run(_config(args))
