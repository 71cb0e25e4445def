"""``robert-sim``: run a scenario of virtual phones against a ROBERT system, or check a scenario file.

    robert-sim check SCENARIO                      # validate, print the ground truth (no server needed)
    robert-sim run SCENARIO                        # on a throw-away system of its own (one per country)
    robert-sim run SCENARIO --server URL [--issuer ADDR --issuer-token T] [--clock-shift-file F] ...

With no flag naming a system, ``run`` starts its own (simulator/system.py, ``LocalSystem``: database, key
store, crypto, codes and API on free ports, captcha off, key auto-rotation, a clock-shift file), takes an
issuer token from it, runs ``robert matcher --once`` against it, and stops it at the end. A scenario
with countries gets one such system per country (``LocalFederation``: federated by mutual TLS, sharing
K_G and one clock-shift file); each matching step then runs ``robert matcher --once`` in every country,
``robert federation forward --once`` in every country, and the matcher again. Any of the
system flags (``SYSTEM_FLAGS``) means a system someone else runs: then the defaults point at the local
``robert up`` and read the same ``ROBERT_*`` variables it does (``ROBERT_HTTP_PORT``,
``ROBERT_CRYPTO_ADDRESS``, ``ROBERT_CODES_ADDRESS``, ``ROBERT_CLOCK_SHIFT_FILE``);
``ROBERT_SIM_ISSUER_TOKEN`` may hold the issuer token. See simulator/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

from simulator.backend import (
    BackendError,
    GrpcIssuer,
    fetch_server_key,
    load_server_key,
    matcher_command,
    matcher_wait,
)
from simulator.groundtruth import ground_truth
from simulator.report import print_report, timeline_png, write_json
from simulator.runner import Backend, CountryServer, Runner, RunOptions, ShiftFileTime
from simulator.scenario import Scenario, ScenarioError, load_scenario
from simulator.system import LaunchError, LocalFederation, LocalSystem

# Flags that name a system someone else runs; without any of them ``run`` starts its own.
SYSTEM_FLAGS = (
    "server", "server_key", "crypto", "issuer", "issuer_token", "clock_shift_file", "matcher_cmd",
    "matcher_wait", "country",
)  # fmt: skip
OWN_COMPONENTS = ("crypto", "codes", "api")  # matching: ``robert matcher --once`` at each step


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _tls_dir() -> Path:
    """Where ``robert up`` keeps the internal plane's certificates (see robert_common.tls)."""
    explicit = os.environ.get("ROBERT_GRPC_TLS_DIR")
    return Path(explicit) if explicit else Path(_env("ROBERT_DATA_DIR", "robert-data")) / "tls"


def _credentials(tls_dir: Path, name: str) -> grpc.ChannelCredentials | None:
    """Mutual TLS with the certificate ``name`` of ``tls_dir``; None (plaintext) when there is no CA
    there (a system run with ROBERT_GRPC_PLAINTEXT)."""
    ca = tls_dir / "ca.pem"
    if not ca.exists():
        return None
    try:
        key, cert = (tls_dir / f"{name}.key").read_bytes(), (tls_dir / f"{name}.pem").read_bytes()
    except OSError:
        raise BackendError(f"no certificate {name} in {tls_dir}: `robert certs issue {name}`") from None
    return grpc.ssl_channel_credentials(ca.read_bytes(), key, cert)


def _add_tls(p: argparse.ArgumentParser, issuer: bool) -> None:
    p.add_argument("--tls-dir", type=Path, default=_tls_dir(), help="CA and certificates of the system")
    if issuer:
        p.add_argument("--issuer-cert", default="issuer-sim", help="certificate name of the issuer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robert-sim", description="Virtual phones and BLE encounters")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate a scenario and print its ground truth")
    check.add_argument("scenario", type=Path)
    check.set_defaults(func=cmd_check)

    key = sub.add_parser("key", help="print the registration public key (base64 DER) from the crypto service")
    key.add_argument("--crypto", default=_env("ROBERT_CRYPTO_ADDRESS", "127.0.0.1:50051"), help="crypto gRPC")
    _add_tls(key, issuer=False)
    key.set_defaults(func=cmd_key)

    codes = sub.add_parser(
        "codes", help="issue long codes through the code issuer, one per line (load tests)"
    )
    codes.add_argument("--count", type=int, required=True, help="how many (1 to 100 000)")
    codes.add_argument(
        "--issuer", default=_env("ROBERT_CODES_ADDRESS", "127.0.0.1:50052"), help="code issuer"
    )
    codes.add_argument(
        "--issuer-token", default=os.environ.get("ROBERT_SIM_ISSUER_TOKEN"), help="issuer token"
    )
    codes.add_argument("--out", type=Path, help="file to write (default: standard output)")
    _add_tls(codes, issuer=True)
    codes.set_defaults(func=cmd_codes)

    run = sub.add_parser(
        "run", help="run a scenario (on a throw-away system of its own unless --server ... is given)"
    )
    run.add_argument("scenario", type=Path)
    run.add_argument(
        "--server", help="phone API base URL (without /api/v6) of a running system (default with other"
        " system flags: http://127.0.0.1:$ROBERT_HTTP_PORT or 8080)",
    )  # fmt: skip
    run.add_argument(
        "--server-key",
        type=Path,
        help="registration public key file (PEM/DER); default: ask the crypto service",
    )
    run.add_argument("--crypto", help="crypto gRPC (default: $ROBERT_CRYPTO_ADDRESS or 127.0.0.1:50051)")
    run.add_argument("--issuer", help="code issuer gRPC (default: $ROBERT_CODES_ADDRESS or 127.0.0.1:50052)")
    run.add_argument("--issuer-token", help="issuer token (default: $ROBERT_SIM_ISSUER_TOKEN)")
    run.add_argument(
        "--clock-shift-file", type=Path,
        help="the system's clock-shift file, the one its processes were started with"
        " (default: $ROBERT_CLOCK_SHIFT_FILE)",
    )  # fmt: skip
    run.add_argument("--settle", type=float, default=1.2, help="seconds processes need to see a new time")
    run.add_argument(
        "--country", action="append", metavar="NAME=SERVER,CRYPTO,ISSUER,TOKEN",
        help="a scenario with countries: that country's system (repeat for each; they share one"
        " clock-shift file, and their own workers match and forward: see --matcher-wait)",
    )  # fmt: skip
    m = run.add_mutually_exclusive_group()
    m.add_argument(
        "--matcher-cmd", help="command that runs one matching pass (default: robert matcher --once)"
    )
    m.add_argument("--matcher-wait", type=float, help="instead: seconds to wait for the system's own worker")
    run.add_argument("--start", type=dt.date.fromisoformat, help="UTC date of day 0 (default: next midnight)")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--concurrency", type=int, default=8, help="requests in flight in a poll round")
    run.add_argument("--json", type=Path, help="write the results as JSON to this file")
    run.add_argument("--plot", type=Path, help="write a timeline PNG to this file (needs matplotlib)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--totals-only", action="store_true", help="no per-phone table")
    _add_tls(run, issuer=True)
    run.set_defaults(func=cmd_run)
    return parser


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    sc = load_scenario(args.scenario)
    truth = ground_truth(sc)
    table = Table(title=f"{sc.name}: {len(sc.phones)} phones, {sc.days} days, seed {sc.seed}")
    for col in ("phone", "joins", "diagnosed", "close min", "exposed"):
        table.add_column(col)
    diagnosed = {d.who: d.at for d in sc.diagnoses}
    for name, p in sc.phones.items():
        when = diagnosed.get(name)
        table.add_row(
            name, f"day {p.joins_at // 86400}", "-" if when is None else f"day {when // 86400}",
            f"{truth[name].close_seconds / 60:.1f}", "yes" if truth[name].exposed else "no",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{len(sc.encounters)} pair encounters; {sum(e.exposed for e in truth.values())} phones exposed"
    )
    return 0


def cmd_key(args: argparse.Namespace, console: Console) -> int:
    key = asyncio.run(fetch_server_key(args.crypto, credentials=_credentials(args.tls_dir, "seed")))
    print(base64.b64encode(key).decode())
    return 0


def cmd_codes(args: argparse.Namespace, console: Console) -> int:
    if not args.issuer_token:
        raise BackendError("no issuer token: pass --issuer-token (e.g. from `robert issuers add sim`)")
    if not 1 <= args.count <= 100_000:
        raise BackendError("--count must be between 1 and 100 000")
    credentials = _credentials(args.tls_dir, args.issuer_cert)
    codes = asyncio.run(
        GrpcIssuer(args.issuer, args.issuer_token, credentials=credentials).long_codes(args.count)
    )
    text = "".join(c + "\n" for c in codes)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    sc = load_scenario(args.scenario)
    if args.seed is not None:
        sc.seed = args.seed
    if not any(getattr(args, name) is not None for name in SYSTEM_FLAGS):
        if sc.countries:
            return _run_on_own_federation(args, sc, console)
        return _run_on_own_system(args, sc, console)
    _external_defaults(args)
    if args.clock_shift_file is None:
        raise BackendError(
            "no clock-shift file: start the system with ROBERT_CLOCK_SHIFT_FILE=F"
            " and pass --clock-shift-file F (or pass no system flag: robert-sim starts its own system)"
        )
    if sc.countries:
        return asyncio.run(_run_countries(args, sc, console))
    if not args.issuer_token:
        raise BackendError("no issuer token: pass --issuer-token (e.g. from `robert issuers add sim`)")
    return asyncio.run(_run_external(args, sc, console))


def _external_defaults(args: argparse.Namespace) -> None:
    """A system someone else runs: unset flags default to the local ``robert up`` and its variables."""
    args.server = args.server or f"http://127.0.0.1:{_env('ROBERT_HTTP_PORT', '8080')}"
    args.crypto = args.crypto or _env("ROBERT_CRYPTO_ADDRESS", "127.0.0.1:50051")
    args.issuer = args.issuer or _env("ROBERT_CODES_ADDRESS", "127.0.0.1:50052")
    args.issuer_token = args.issuer_token or os.environ.get("ROBERT_SIM_ISSUER_TOKEN")
    if args.clock_shift_file is None and os.environ.get("ROBERT_CLOCK_SHIFT_FILE"):
        args.clock_shift_file = Path(os.environ["ROBERT_CLOCK_SHIFT_FILE"])
    if args.matcher_wait is None and args.matcher_cmd is None:
        args.matcher_cmd = "robert matcher --once"


def _run_on_own_system(args: argparse.Namespace, sc: Scenario, console: Console) -> int:
    """Start a throw-away system with the settings a simulation needs, run on it, stop it."""
    console.print("[dim]starting a throw-away system (database, key store, crypto, codes, API)...[/]")
    with LocalSystem(OWN_COMPONENTS) as system:
        key = system.server_public_key()
        token = system.issuer_token("robert-sim")
        console.print(f"[dim]system up: phone API at {system.base_url}, data in {system.dir}[/]")

        async def run_matcher() -> None:
            try:
                await asyncio.to_thread(system.robert, "matcher", "--once")
            except LaunchError as e:
                raise BackendError(str(e)) from None

        issuer = GrpcIssuer(system.codes_address, token, credentials=system.credentials("issuer-sim"))
        time_control = ShiftFileTime(system.clock_shift_file, args.settle)
        return asyncio.run(_run(args, sc, console, system.base_url, key, issuer, run_matcher, time_control))


def _run_on_own_federation(args: argparse.Namespace, sc: Scenario, console: Console) -> int:
    """One throw-away system per country of the scenario, federated with each other; run; stop them."""
    names = ", ".join(f"{n} ({cc:#04x})" for n, cc in sc.countries.items())
    console.print(f"[dim]starting a throw-away system per country: {names}...[/]")
    with LocalFederation(sc.countries, (*OWN_COMPONENTS, "federation")) as fed:
        systems = fed.systems
        servers = {n: CountryServer(s.base_url, s.server_public_key()) for n, s in systems.items()}
        issuers = {
            n: GrpcIssuer(
                s.codes_address, s.issuer_token("robert-sim"), credentials=s.credentials("issuer-sim")
            )
            for n, s in systems.items()
        }
        for n, s in systems.items():
            console.print(f"[dim]{n} up: phone API at {s.base_url}, federation at"
                          f" {s.federation_address}, data in {s.dir}[/]")  # fmt: skip
        console.print(f"[dim]federation folder (clock shift, K_G): {fed.dir}[/]")

        async def each(*command: str) -> list[dict[str, int]]:
            """``robert COMMAND`` in every country at once; the figures each prints (a JSON line)."""
            try:
                runs = (asyncio.to_thread(s.robert, *command) for s in systems.values())
                outs = await asyncio.gather(*runs)
            except LaunchError as e:
                raise BackendError(str(e)) from None
            return [json.loads(out.strip().splitlines()[-1]) for out in outs]

        undelivered = False  # a forwarding pass failed: forward again at the next step

        async def match_and_forward() -> None:
            nonlocal undelivered
            matched = await each("matcher", "--once")  # local contacts; foreign ones into the outbox
            if not undelivered and not any(m.get("contactsForeign") for m in matched):
                return  # nothing to forward: no forwarding pass, no second matching pass
            forwarded = await each("federation", "forward", "--once")  # the outboxes to the partners
            undelivered = any(f.get("failures") for f in forwarded)
            await each("matcher", "--once")  # what the partners just delivered

        time_control = ShiftFileTime(fed.clock_shift_file, args.settle)
        return asyncio.run(_run_on_countries(args, sc, console, servers, issuers, match_and_forward,
                                             time_control))  # fmt: skip


COUNTRY_MATCHER_WAIT = 5.0  # seconds: the systems' own workers match, forward, and match again


def _parse_countries(values: list[str], sc: Scenario) -> dict[str, list[str]]:
    """``--country NAME=SERVER,CRYPTO,ISSUER,TOKEN`` for every country of the scenario."""
    out: dict[str, list[str]] = {}
    for value in values:
        name, _, rest = value.partition("=")
        parts = rest.split(",")
        if name not in sc.countries or len(parts) != 4 or not all(parts):
            raise BackendError(f"--country {name}=...: give NAME=SERVER,CRYPTO,ISSUER,TOKEN for a country"
                               f" of the scenario ({', '.join(sc.countries)})")  # fmt: skip
        out[name] = parts
    missing = [c for c in sc.countries if c not in out]
    if missing:
        raise BackendError(f"no system for countries {', '.join(missing)}: pass --country for each")
    return out


async def _run_countries(args: argparse.Namespace, sc: Scenario, console: Console) -> int:
    """Systems someone else runs, one per country (``--country``); their own workers match and forward."""
    systems = _parse_countries(args.country or [], sc)
    servers: dict[str, CountryServer] = {}
    issuers: dict[str, GrpcIssuer] = {}
    for name, (server, crypto, issuer, token) in systems.items():
        servers[name] = CountryServer(server.rstrip("/"), await fetch_server_key(crypto))
        issuers[name] = GrpcIssuer(issuer, token)
    run_matcher = matcher_wait(args.matcher_wait or COUNTRY_MATCHER_WAIT)
    time_control = ShiftFileTime(args.clock_shift_file, args.settle)
    return await _run_on_countries(args, sc, console, servers, issuers, run_matcher, time_control)


async def _run_on_countries(
    args: argparse.Namespace,
    sc: Scenario,
    console: Console,
    servers: dict[str, CountryServer],
    issuers: dict[str, GrpcIssuer],
    run_matcher: Callable[[], Awaitable[None]],
    time_control: ShiftFileTime,
) -> int:
    async def code_in(country: str) -> str:
        return await issuers[country].get_code()

    first = next(iter(servers.values()))
    options = RunOptions(
        base_url=first.base_url, server_public_key=first.server_public_key,
        concurrency=args.concurrency, show_progress=not args.no_progress, countries=servers,
    )  # fmt: skip
    backend = Backend(issuers[next(iter(issuers))].get_code, run_matcher, code_in)
    runner = Runner(sc, options, time_control, backend)
    try:
        result = await runner.run()
    finally:
        for each in issuers.values():
            await each.close()
    print_report(result, console, per_phone=not args.totals_only)
    if args.json:
        write_json(result, args.json)
    return 0


async def _run_external(args: argparse.Namespace, sc: Scenario, console: Console) -> int:
    if args.server_key:
        key = load_server_key(args.server_key)
    else:
        key = await fetch_server_key(args.crypto, credentials=_credentials(args.tls_dir, "seed"))
    issuer = GrpcIssuer(
        args.issuer, args.issuer_token, credentials=_credentials(args.tls_dir, args.issuer_cert)
    )
    run_matcher = matcher_wait(args.matcher_wait) if args.matcher_wait else matcher_command(args.matcher_cmd)
    time_control = ShiftFileTime(args.clock_shift_file, args.settle)
    return await _run(args, sc, console, args.server, key, issuer, run_matcher, time_control)


async def _run(
    args: argparse.Namespace,
    sc: Scenario,
    console: Console,
    server: str,
    key: bytes,
    issuer: GrpcIssuer,
    run_matcher: Callable[[], Awaitable[None]],
    time_control: ShiftFileTime,
) -> int:
    start = None
    if args.start is not None:
        start = dt.datetime(args.start.year, args.start.month, args.start.day, tzinfo=dt.UTC).timestamp()
    options = RunOptions(
        base_url=server.rstrip("/"), server_public_key=key, start_unix=start,
        concurrency=args.concurrency, show_progress=not args.no_progress,
    )  # fmt: skip
    runner = Runner(sc, options, time_control, Backend(issuer.get_code, run_matcher))
    try:
        result = await runner.run()
    finally:
        await issuer.close()
    print_report(result, console, per_phone=not args.totals_only)
    if args.json:
        write_json(result, args.json)
    if args.plot:
        timeline_png(result, args.plot)
        console.print(f"timeline written to {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        return int(args.func(args, console))
    except (ScenarioError, BackendError) as e:
        print(f"robert-sim: {e}", file=sys.stderr)
        return 2
    except LaunchError as e:
        print(f"robert-sim: the throw-away system did not start: {e}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as e:
        print(f"robert-sim: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
