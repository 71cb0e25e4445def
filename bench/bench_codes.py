"""Submission codes: long codes issued per second (one lot) and verifications (reserve + confirm) per second.

The code issuer runs as its own process, ``robert codes serve``, started with the database by
``simulator.system.LocalSystem`` (on ROBERT_MONGODB_URI if set, else an embedded SecantusDB); the
verifier (what /report uses) runs in this process against the same database. Prints figures only,
with the issuer process's CPU time per code.
Sizes: ROBERT_BENCH_CODES_LOT (default 10 000), ROBERT_BENCH_CODES_VERIFY (default 1 000).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import grpc

from robert_common.clock import Clock
from robert_common.mongo import mongo_client
from robert_common.rpc import codes_pb2 as pb
from robert_common.rpc import codes_pb2_grpc
from robert_common.settings import load_settings
from robert_server.codes import make_verifier
from simulator.system import LocalSystem

LOT = int(os.environ.get("ROBERT_BENCH_CODES_LOT", "10000"))
VERIFY = int(os.environ.get("ROBERT_BENCH_CODES_VERIFY", "500"))
CONCURRENCY = 16
PEPPER = "bench-pepper-0123456789abcdef"


async def run(system: LocalSystem, token: str) -> None:
    settings = load_settings(codes_pepper=PEPPER)
    clock = Clock()
    client = mongo_client(system.mongodb_uri)
    db = client[system.env["ROBERT_MONGODB_DATABASE"]]
    try:
        creds = system.credentials("issuer-bench")  # the code issuer runs mutual TLS
        options = [("grpc.ssl_target_name_override", "codes")]
        async with grpc.aio.secure_channel(system.codes_address, creds, options=options) as channel:
            stub = codes_pb2_grpc.CodeIssuerStub(channel)
            auth = (("authorization", f"Bearer {token}"),)
            cpu0, t0 = system.cpu_seconds()["codes"], time.perf_counter()
            lot = [
                c.code async for c in stub.IssueLongCodes(pb.IssueLongCodesRequest(count=LOT), metadata=auth)
            ]
            dt_lot, cpu = time.perf_counter() - t0, system.cpu_seconds()["codes"] - cpu0
            print(
                f"long-code lot over gRPC: {len(lot)} codes in {dt_lot:.2f} s, {len(lot) / dt_lot:,.0f}/s, "
                f"issuer CPU {1e6 * cpu / len(lot):.0f} us/code"
            )
            n_short = 200
            cpu0, t0 = system.cpu_seconds()["codes"], time.perf_counter()
            for _ in range(n_short):
                await stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=auth)
            dt_short, cpu = time.perf_counter() - t0, system.cpu_seconds()["codes"] - cpu0
            print(
                f"short codes over gRPC, one by one: {n_short / dt_short:,.0f} codes/s, "
                f"issuer CPU {1000 * cpu / n_short:.2f} ms/code"
            )

        verifier = make_verifier(db, settings, clock)
        codes = lot[:VERIFY]
        t0 = time.perf_counter()
        for code in codes[: VERIFY // 2]:
            res = await verifier.reserve(code, "192.0.2.1")
            assert res is not None
            await verifier.confirm(res)
        dt_seq = time.perf_counter() - t0
        print(f"verifications (reserve + confirm), sequential: {VERIFY // 2 / dt_seq:,.0f} /s")

        rest = codes[VERIFY // 2 :]
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(code: str, i: int) -> None:
            async with sem:
                res = await verifier.reserve(code, f"198.51.100.{i % 250}")
                assert res is not None
                await verifier.confirm(res)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, i) for i, c in enumerate(rest)))
        dt_conc = time.perf_counter() - t0
        print(f"verifications (reserve + confirm), {CONCURRENCY} concurrent: {len(rest) / dt_conc:,.0f} /s")

        t0 = time.perf_counter()
        n_bad = 300
        for i in range(n_bad):
            assert await verifier.reserve(str(uuid.uuid4()), f"203.0.113.{i % 250}") is None
        dt_bad = time.perf_counter() - t0
        print(f"refused attempts (unknown code, rate-limit bookkeeping): {n_bad / dt_bad:,.0f} /s")
    finally:
        await client.close()


def main() -> None:
    with LocalSystem(("codes",), env={"ROBERT_CODES_PEPPER": PEPPER}) as system:
        asyncio.run(run(system, system.issuer_token("bench")))


if __name__ == "__main__":
    main()
