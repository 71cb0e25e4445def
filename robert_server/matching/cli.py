"""``robert matcher``: the matching worker, continuously (a pass every ROBERT_MATCHER_INTERVAL seconds)
or once with ``--once`` (tests, cron). Any number may run at once, on any number of machines."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from robert_common.clock import Clock, ServiceTime
from robert_common.logs import setup_logging
from robert_common.mongo import open_database, require_uri
from robert_common.settings import Settings, SettingsError, load_settings
from robert_common.signals import stop_event

log = logging.getLogger("robert.matcher")


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    p = sub.add_parser("matcher", help="match uploaded contacts against registrations and evaluate risks")
    p.add_argument("--once", action="store_true", help="run one pass, print what it did as JSON, and exit")
    p.add_argument(
        "--interval", type=float, default=None, help="seconds between passes (ROBERT_MATCHER_INTERVAL)"
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["dead-letters"],
        help="dead-letters: list the contact batches matching gave up on (and --retry ID one of them)",
    )
    p.add_argument("--retry", metavar="ID", help="with dead-letters: put this batch back for matching")
    p.set_defaults(func=run)


async def dead_letter_report(settings: Settings, retry: str | None) -> tuple[int, str]:
    """``robert matcher dead-letters [--retry ID]``: (exit status, text to print)."""
    from robert_server import dead_letters
    from robert_server.matching import parking

    async with open_database(settings, "robert matcher") as db:
        if retry is not None:
            if await parking.retry(db, retry):
                return 0, f"{retry}: put back for matching"
            return 1, f"{retry}: no such dead letter"
        docs = await dead_letters.summaries(db)
    lines = [f"{len(docs)} dead letter(s)"]
    for d in docs:
        parked = d["parked_at"].isoformat(timespec="seconds")
        lines.append(
            f"{d['_id']}  parked {parked}  attempts {d.get('attempts', 0)}  "
            f"contacts {d['contacts']}  reason {d.get('reason', '?')}"
        )
    return 0, "\n".join(lines)


async def run_matcher(settings: Settings, *, once: bool, interval: float | None = None) -> dict[str, Any]:
    """Run the worker over the configured database and crypto service; the pass's figures when ``once``."""
    from robert_server import contacts, registrations
    from robert_server.crypto_client import CryptoClient
    from robert_server.matching.worker import MatchingConfig, Worker

    async with open_database(settings, "robert matcher") as db:
        await registrations.ensure_indexes(db)
        await contacts.ensure_indexes(db)
        service_time = ServiceTime(settings.time_start_date, Clock(settings.clock_shift_file))
        async with CryptoClient.from_settings(settings, "matcher") as crypto:
            worker = Worker(db, crypto, service_time, MatchingConfig.from_settings(settings))
            if once:
                stats = await worker.run_once()
                return {"batches": stats.batches, **stats.counters}
            stop = stop_event()
            log.info("matcher started", extra={"interval": interval or settings.matcher_interval})
            await worker.run_forever(interval or settings.matcher_interval, stop)
            return {}


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    require_uri(settings, "robert matcher")
    if args.retry is not None and args.action != "dead-letters":
        raise SettingsError("--retry goes with: robert matcher dead-letters --retry ID")
    if args.action == "dead-letters":
        status, text = asyncio.run(dead_letter_report(settings, args.retry))
        print(text)
        return status
    if args.interval is not None and args.interval <= 0:
        raise SettingsError("--interval must be a positive number of seconds")
    result = asyncio.run(run_matcher(settings, once=args.once, interval=args.interval))
    if args.once:
        print(json.dumps(result, sort_keys=True))
    return 0
