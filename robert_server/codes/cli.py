"""``robert codes serve|issue-long|qr|purge`` and ``robert issuers add|list|revoke`` (issue 4)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from robert_common.clock import Clock
from robert_common.files import open_private_append, write_private
from robert_common.logs import setup_logging
from robert_common.mongo import open_database
from robert_common.settings import Settings, SettingsError, load_settings
from robert_common.signals import stop_event

log = logging.getLogger("robert.codes")

CSV_HEADER = ["qr_payload", "code", "valid_from", "valid_until", "lot"]
CLI_ISSUER = "cli"
T = TypeVar("T")


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    c = sub.add_parser("codes", help="submission codes: the issuer service, long-code lots, QR codes, purge")
    csub = c.add_subparsers(dest="codes_command", required=True, metavar="ACTION")
    csub.add_parser("serve", help="run the CodeIssuer gRPC service on ROBERT_CODES_LISTEN").set_defaults(
        func=run_serve
    )
    lot = csub.add_parser(
        "issue-long", help="write a lot of long codes (QR payload, code, validity) to a CSV file"
    )
    lot.add_argument("--count", type=int, required=True, help="codes the file must hold (re-running tops up)")
    lot.add_argument(
        "--from", dest="from_date", type=_date, help="first valid day YYYY-MM-DD (default today)"
    )
    lot.add_argument("--out", type=Path, required=True, help="CSV file; FILE.sha256 is written beside it")
    lot.set_defaults(func=run_issue_long)
    qr = csub.add_parser("qr", help="render the QR code of a short or long code (PNG or SVG)")
    qr.add_argument("code")
    qr.add_argument("--out", type=Path, help="FILE.png or FILE.svg (default: SVG on standard output)")
    qr.add_argument("--scale", type=int, default=8, help="pixels per module (default 8)")
    qr.set_defaults(func=run_qr)
    csub.add_parser("purge", help="expire, count and delete old codes now").set_defaults(func=run_purge)

    i = sub.add_parser("issuers", help="code issuers and their bearer tokens")
    isub = i.add_subparsers(dest="issuers_command", required=True, metavar="ACTION")
    add = isub.add_parser("add", help="add an issuer and print its token (shown only once)")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may revoke any issuer's codes (others: their own)")
    isub.add_parser("list", help="list issuers")
    rev = isub.add_parser("revoke", help="revoke an issuer's token")
    rev.add_argument("name")
    i.set_defaults(func=run_issuers)


class CommandError(Exception):
    """A failure of a command, printed as one line (never a stack trace)."""


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; database and file errors become one clear line."""
    try:
        return asyncio.run(coro)
    except PyMongoError as e:
        raise CommandError(f"database error: {type(e).__name__}") from None
    except OSError as e:
        raise CommandError(f"{e.filename or 'file'}: {e.strerror}") from None


def _report(prog: str, e: Exception) -> int:
    print(f"robert {prog}: {e}", file=sys.stderr)
    return 2


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a date YYYY-MM-DD") from None


def _database(settings: Settings) -> contextlib.AbstractAsyncContextManager[AsyncDatabase]:
    return open_database(settings, "robert codes / robert issuers")


# --- robert codes serve --------------------------------------------------------------------------


async def serve(settings: Settings, clock: Clock) -> None:
    from .server import purge_forever, start_server

    async with _database(settings) as db:
        server, _, service = await start_server(db, settings, clock)
        purger = asyncio.create_task(purge_forever(service))
        try:
            await stop_event().wait()
        finally:
            purger.cancel()
            await server.stop(5)


def run_serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        _run(serve(settings, Clock(settings.clock_shift_file)))
    except CommandError as e:
        return _report("codes serve", e)
    return 0


# --- robert codes issue-long ---------------------------------------------------------------------


def read_lot_file(path: Path) -> list[list[str]]:
    """The complete rows of a lot file (a half-written last line, from a crash, is cut off)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    rows = list(csv.reader(io.StringIO(data.decode())))
    if not rows:
        return []
    if rows[0] != CSV_HEADER:
        raise SettingsError(f"{path} is not a lot file written by robert codes issue-long")
    if any(len(r) != len(CSV_HEADER) for r in rows[1:]):
        raise SettingsError(f"{path} has malformed rows")
    return rows[1:]


def read_lot_header(path: Path) -> bool:
    """True if ``path`` already starts with the lot file header."""
    try:
        with open(path, "rb") as f:
            return f.readline().startswith(",".join(CSV_HEADER).encode())
    except FileNotFoundError:
        return False


def write_sha256(path: Path) -> Path:
    """``FILE.sha256`` in ``sha256sum`` format, written atomically."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = path.with_name(path.name + ".sha256")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    tmp.replace(out)
    return out


async def issue_long_file(
    db: AsyncDatabase, settings: Settings, clock: Clock, count: int, day: dt.date | None, out: Path
) -> tuple[int, int]:
    """Top the lot file ``out`` up to ``count`` codes; returns (codes already there, codes added).

    Each batch is stored in the database before it is appended to the file, so a crash leaves at
    worst unused codes that nobody holds (they expire), never a printed code the server does not know.
    """
    from .service import CodeService

    service = CodeService(db, settings, clock)
    day = day or service.today()
    rows = read_lot_file(out)
    lot = rows[0][4] if rows else None
    if rows:
        valid_from = dt.datetime.fromisoformat(rows[0][2])
        from .formats import long_validity

        expected = long_validity(day, settings.codes_long_validity_days, settings.codes_timezone)[0]
        if valid_from != expected:
            raise SettingsError(f"{out} holds a lot valid from another day: use another file")
    missing = count - len(rows)
    if missing > 0:
        new_file = not rows and not read_lot_header(out)
        with os.fdopen(open_private_append(out), "w", newline="") as f:  # live codes: owner only
            writer = csv.writer(f, lineterminator="\n")
            if new_file:
                writer.writerow(CSV_HEADER)
            async for batch in service.issue_long_lot(CLI_ISSUER, missing, day, lot):
                for c in batch:
                    writer.writerow(
                        [c.qr_payload, c.code, c.valid_from.isoformat(), c.valid_until.isoformat(), c.lot]
                    )
                f.flush()
                os.fsync(f.fileno())
    write_sha256(out)
    return len(rows), max(missing, 0)


def run_issue_long(args: argparse.Namespace) -> int:
    if args.count < 1:
        print("robert codes issue-long: --count must be at least 1", file=sys.stderr)
        return 2
    settings = load_settings()
    setup_logging(settings.log_level)

    async def go() -> tuple[int, int]:
        async with _database(settings) as db:
            return await issue_long_file(db, settings, Clock(settings.clock_shift_file), args.count,
                                         args.from_date, args.out)  # fmt: skip

    from .service import CodeServiceError

    try:
        had, added = _run(go())
    except (CodeServiceError, CommandError) as e:
        return _report("codes issue-long", e)
    print(f"{args.out}: {had + added} codes ({added} added); checksum in {args.out.name}.sha256")
    return 0


# --- robert codes qr -----------------------------------------------------------------------------


def render_qr(settings: Settings, code: str, out: Path | None, scale: int = 8) -> bytes:
    """The QR code of a short or long code's deep link, as SVG or PNG bytes (PROTOCOL.md 7)."""
    import segno

    from .formats import JWT, normalise, qr_payload

    parsed = normalise(code)
    if parsed is None or parsed[0] == JWT:
        raise ValueError("not a short or long code")
    kind, text = parsed
    qr = segno.make(qr_payload(settings.codes_app_link_base, text, kind), error="m")
    kind_out = "png" if out is not None and out.suffix.lower() == ".png" else "svg"
    if out is not None and out.suffix.lower() not in (".png", ".svg"):
        raise ValueError("the output file must end in .png or .svg")
    buf = io.BytesIO()
    qr.save(buf, kind=kind_out, scale=scale)
    return buf.getvalue()


def run_qr(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        image = render_qr(settings, args.code, args.out, args.scale)
    except ValueError as e:
        print(f"robert codes qr: {e}", file=sys.stderr)
        return 2
    try:
        if args.out is None:
            sys.stdout.buffer.write(image)
        else:
            write_private(args.out, image)  # owner only: a QR code is a live code
    except OSError as e:
        return _report("codes qr", CommandError(f"{args.out}: {e.strerror}"))
    return 0


# --- robert codes purge, robert issuers ---------------------------------------------------------


def run_purge(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings.log_level)

    async def go() -> dict[str, int]:
        from .service import CodeService

        async with _database(settings) as db:
            service = CodeService(db, settings, Clock(settings.clock_shift_file))
            await service.ensure_indexes()
            return await service.purge()

    try:
        print(json.dumps(_run(go())))
    except CommandError as e:
        return _report("codes purge", e)
    return 0


async def issuers_command(db: AsyncDatabase, args: argparse.Namespace, now: dt.datetime) -> int:
    from . import issuers

    await issuers.ensure_indexes(db)
    if args.issuers_command == "add":
        try:
            token = await issuers.add(db, args.name, now, admin=getattr(args, "admin", False))
        except issuers.IssuerError as e:
            print(f"robert issuers: {e}", file=sys.stderr)
            return 1
        print(token)
        print("(keep this token: it is shown only once)", file=sys.stderr)
    elif args.issuers_command == "revoke":
        if not await issuers.revoke(db, args.name, now):
            print(f"robert issuers: no active issuer named {args.name!r}", file=sys.stderr)
            return 1
    else:
        for doc in await issuers.list_all(db):
            revoked = doc.get("revoked_at")
            state = f"revoked {revoked.isoformat()}" if revoked else "active"
            scopes = ",".join(doc.get("scopes") or []) or "-"
            print(f"{doc['_id']}\tadded {doc['created_at'].isoformat()}\t{state}\tscopes {scopes}")
    return 0


def run_issuers(args: argparse.Namespace) -> int:
    settings = load_settings()
    clock = Clock(settings.clock_shift_file)

    async def go() -> int:
        async with _database(settings) as db:
            return await issuers_command(db, args, dt.datetime.fromtimestamp(clock.now(), tz=dt.UTC))

    try:
        return _run(go())
    except CommandError as e:
        return _report("issuers", e)
