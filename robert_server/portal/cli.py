"""``robert portal`` (the ProStopCovid web page), ``robert portal audit`` and ``robert portal dev-idp``."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from typing import Any

from aiohttp import web

from robert_common.clock import Clock
from robert_common.logs import setup_logging
from robert_common.mongo import open_database
from robert_common.settings import Settings, load_settings
from robert_common.signals import stop_event

log = logging.getLogger("robert.portal")


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("portal", help="ProStopCovid: the page where doctors and nurses get a patient's code")
    p.set_defaults(func=run_portal)
    psub = p.add_subparsers(dest="portal_command", metavar="ACTION")
    psub.add_parser("serve", help="serve the portal (the default)").set_defaults(func=run_portal)
    a = psub.add_parser("audit", help="codes issued per day and per hashed professional")
    a.add_argument("--from", dest="since", type=_date, help="first day YYYY-MM-DD (default: 7 days ago)")
    a.add_argument("--to", dest="until", type=_date, help="last day YYYY-MM-DD (default: today)")
    a.set_defaults(func=run_audit)
    psub.add_parser(
        "dev-idp", help="run the development OIDC provider (what `robert up` starts)"
    ).set_defaults(func=run_dev_idp)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a date YYYY-MM-DD") from None


async def serve(settings: Settings, clock: Clock) -> None:
    from .app import create_app

    runner = web.AppRunner(create_app(settings, clock=clock), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.portal_host, settings.portal_port).start()
    log.info("portal listening", extra={"host": settings.portal_host, "port": settings.portal_port})
    try:
        await stop_event().wait()
    finally:
        await runner.cleanup()


def run_portal(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    from .config import issuer_channel_credentials, load_config

    load_config(settings)  # a bad setting stops here, before anything listens
    issuer_channel_credentials(settings)
    asyncio.run(serve(settings, Clock(settings.clock_shift_file)))
    return 0


async def audit_rows(settings: Settings, since: dt.date, until: dt.date) -> list[tuple[str, str, int]]:
    from . import audit

    async with open_database(settings, "robert portal audit") as db:
        return await audit.daily_counts(db, since, until)


def run_audit(args: argparse.Namespace) -> int:
    settings = load_settings()
    today = dt.datetime.now(dt.UTC).date()
    until = args.until or today
    since = args.since or until - dt.timedelta(days=7)
    if since > until:
        print("robert portal audit: --from is after --to", file=sys.stderr)
        return 2
    rows = asyncio.run(audit_rows(settings, since, until))
    print("day\tprofessional (keyed hash)\tcodes")
    for day, pro, n in rows:
        print(f"{day}\t{pro}\t{n}")
    return 0


def run_dev_idp(args: argparse.Namespace) -> int:
    """Replace this process by the node provider, registered for the portal of the settings."""
    settings = load_settings()
    from .config import load_config
    from .devidp import DevIdpError, command, environment

    config = load_config(settings, with_token=False)
    try:
        argv = command()
    except DevIdpError as e:
        print(f"robert portal dev-idp: {e}", file=sys.stderr)
        return 2
    from .config import public_jwks

    jwks = public_jwks(config.client_key) if config.client_key else None
    env = environment(
        settings.portal_dev_idp_port, config.client_id, config.client_secret, [config.redirect_uri],
        [config.post_logout_uri], jwks,
    )  # fmt: skip
    os.execve(argv[0], argv, env)  # noqa: S606 - a fixed program path, no shell
    return 0  # not reached
