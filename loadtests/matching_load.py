"""Matching load: pre-load N reports through the API, then time one ``robert matcher --once`` pass.

    .venv/bin/python loadtests/matching_load.py --reports 200 --contacts 20 --hellos 60

Starts a local system without its periodic worker (``simulator.system.LocalSystem``), registers ``--phones``
phones, then uploads ``--reports`` reports, each from a new phone, of ``--contacts`` Contacts (HELLOs
really built by registered phones, so every Contact matches) of ``--hellos`` HELLOs each, with codes
from the real code issuer. Then it runs the worker once and prints the wall time, the rates and the
worker's own JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robert_common.clock import Clock  # noqa: E402
from simulator.backend import GrpcIssuer  # noqa: E402
from simulator.phone import Phone  # noqa: E402
from simulator.system import LocalSystem  # noqa: E402


async def preload(system: LocalSystem, args: argparse.Namespace) -> tuple[int, float]:
    key = system.server_public_key()
    issuer = GrpcIssuer(
        system.codes_address, system.issuer_token(), credentials=system.credentials("issuer-load")
    )
    codes = await issuer.long_codes(args.reports)
    clock = Clock()
    rng = random.Random(args.seed)
    hellos = 0
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        phones = []
        for _ in range(args.phones):
            p = Phone(system.base_url, key, clock=clock, http=http)
            assert (await p.register()).status == 201
            phones.append(p)
        for code in codes:
            reporter = Phone(system.base_url, key, clock=clock, http=http)
            assert (await reporter.register()).status == 201
            now = clock.ntp_now()
            for other in rng.sample(phones, min(args.contacts, len(phones))):
                # heard in the current epoch: the registration bundle starts there
                epoch_start = other.epoch_start(other.epoch_now())
                start = max(epoch_start, now - args.hellos * 5 - rng.randrange(600))
                for i in range(args.hellos):
                    t = start + 5 * i
                    reporter.hear(other.hello(t), rng.randint(-80, -45), time_collected=t)
            hellos += len(reporter.heard)
            r = await reporter.report(code)
            assert r.status == 200, r
    return hellos, time.monotonic() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phones", type=int, default=200, help="registered phones whose HELLOs are reported")
    p.add_argument("--reports", type=int, default=100)
    p.add_argument("--contacts", type=int, default=20, help="contacts per report")
    p.add_argument("--hellos", type=int, default=60, help="HELLOs per contact (one every 5 s)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    env = {"ROBERT_STATUS_MIN_EPOCH_GAP": "0"}
    with LocalSystem(("crypto", "codes", "api"), env=env) as system:
        hellos, upload = asyncio.run(preload(system, args))
        print(f"pre-loaded {args.reports} reports, {hellos} HELLOs in {upload:.1f} s "
              f"({args.reports / upload:.1f} reports/s including registrations)")  # fmt: skip
        before = sum(system.cpu_seconds().values())
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "robert_server.cli", "matcher", "--once"],
            env=system.env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - t0
        cpu = sum(system.cpu_seconds().values()) - before
        print(f"robert matcher --once: {wall:.1f} s wall (process start included), exit {done.returncode}")
        print(f"  {hellos / wall:.0f} HELLOs/s, {args.reports * args.contacts / wall:.0f} contacts/s; "
              f"crypto + database CPU during the pass {cpu:.1f} s")  # fmt: skip
        print(f"  worker summary: {done.stdout.strip()[-1500:]}")
        if done.returncode != 0:
            print(done.stderr[-1500:], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
