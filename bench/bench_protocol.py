"""Protocol primitives on one core: bundle building, bulk EBID decryption, HELLO MAC checks, SKINNY blocks.

Run with ``.venv/bin/python -m bench protocol``. Prints figures against the goals of issue 2; asserts nothing.
Times are CPU time of this one thread (``time.thread_time``): the machine is shared, and wall-clock time
would count the time the process spends descheduled. Each figure is the best of several repeats; the bundle
also shows its wall-clock time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial

from crypto_backend import protocol as p
from crypto_backend.protocol import skinny as reference

REPEATS = 7


def _native_simd() -> bool:
    from crypto_backend.protocol import _skinny

    return bool(_skinny._use_simd(True))


def best_seconds(
    fn: Callable[[], object],
    number: int,
    repeats: int = REPEATS,
    clock: Callable[[], float] = time.thread_time,
) -> float:
    """Best time of one call of ``fn`` over ``repeats`` runs of ``number`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            fn()
        best = min(best, (clock() - start) / number)
    return best


def line(what: str, value: str, goal: str = "") -> None:
    print(f"  {what:<52} {value:>16}  {goal}")


def bench_skinny() -> None:
    key = p.skinny_key(os.urandom(24))
    block = os.urandom(8)
    line(
        "SKINNY-64-192 one block, one call (native)",
        f"{best_seconds(lambda: key.encrypt(block), 50_000) * 1e9:.0f} ns",
    )
    for n in (384, 100_000):
        data = os.urandom(8 * n)
        t = best_seconds(partial(key.encrypt, data), max(1, 200_000 // n))
        line(f"SKINNY-64-192 per block, bulk of {n} (native)", f"{t / n * 1e9:.0f} ns")
    if p.NATIVE:
        from crypto_backend.protocol import _skinny

        data = os.urandom(8 * 384)
        _skinny._use_simd(False)
        t = best_seconds(partial(key.encrypt, data), 500)
        _skinny._use_simd(True)
        line("SKINNY-64-192 per block, bulk of 384 (portable tables)", f"{t / 384 * 1e9:.0f} ns")
    ref = reference.Key(os.urandom(24))
    line(
        "SKINNY-64-192 one block (pure-Python reference)",
        f"{best_seconds(lambda: ref.encrypt(block), 50, 3) * 1e6:.0f} us",
    )


def bench_bundle() -> None:
    k_g, k_tuples, id_a = os.urandom(32), os.urandom(32), os.urandom(5)
    days = {d: os.urandom(24) for d in range(100, 105)}
    first = 100 * 96  # a whole first day: 4 full days = 384 tuples
    n = p.bundle_epochs(first, 4)
    bundle = lambda: p.seal_bundle(k_tuples, days, k_g, id_a, first, 4, 0x21)  # noqa: E731
    t = best_seconds(bundle, 2_000)
    wall = best_seconds(bundle, 2_000, clock=time.perf_counter)
    line(f"bundle of {n} tuples (EBIDs+ECCs+JSON+GCM seal)", f"{t * 1e3:.3f} ms", "goal <= 0.25 ms")
    print(f"    {1 / t:,.0f} bundles/s on one core; best wall-clock {wall * 1e3:.3f} ms")
    ebids = b"".join(p.encrypt_ebids_packed(days[100 + d], first + 96 * d, 96, id_a) for d in range(4))
    eccs = p.encrypt_country_codes(k_g, ebids, 0x21)
    plain = p.tuples_json(first, ebids, eccs)
    parts = {
        "EBIDs (4 day keys x 96)": lambda: [
            p.encrypt_ebids_packed(days[100 + d], first + 96 * d, 96, id_a) for d in range(4)
        ],
        "ECCs (one AES-ECB call)": lambda: p.encrypt_country_codes(k_g, ebids, 0x21),
        "JSON": lambda: p.tuples_json(first, ebids, eccs),
        f"AES-GCM seal ({len(plain):,} bytes)": lambda: p.seal_tuples(k_tuples, plain),
    }
    for name, fn in parts.items():
        print(f"    {name:<48} {best_seconds(fn, 2_000) * 1e6:10.1f} us")


def bench_decrypt() -> None:
    k_s = os.urandom(24)
    for n in (1_000, 100_000):
        ebids = os.urandom(8 * n)
        t = best_seconds(partial(p.decrypt_ebids_packed, k_s, ebids), max(1, 200_000 // n))
        line(f"bulk EBID decryption, batches of {n:,}", f"{n / t:,.0f} /s", "goal >= 1,000,000 /s")
    ebids_list = [os.urandom(8) for _ in range(1_000)]
    t = best_seconds(lambda: p.decrypt_ebids(k_s, ebids_list), 200)
    line("EBID decryption, decrypt_ebids (list of tuples)", f"{1_000 / t:,.0f} /s")
    one = ebids_list[0]
    line(
        "EBID decryption, decrypt_ebid one at a time",
        f"{1 / best_seconds(lambda: p.decrypt_ebid(k_s, one), 50_000):,.0f} /s",
    )


def bench_hello() -> None:
    k_mac, ecc, ebid = os.urandom(32), b"\x21", os.urandom(8)
    times = list(range(1_000, 1_010))
    macs = [p.hello_mac(k_mac, ecc, ebid, t) for t in times]
    t = best_seconds(lambda: p.verify_hello_mac(k_mac, ecc, ebid, times[0], macs[0]), 50_000)
    line("HELLO MAC checks, verify_hello_mac one at a time", f"{1 / t:,.0f} /s", "goal >= 300,000 /s")
    t = best_seconds(lambda: p.verify_hello_macs(k_mac, ecc, ebid, times, macs), 5_000)
    line(
        "HELLO MAC checks, verify_hello_macs (10 per contact)",
        f"{len(times) / t:,.0f} /s",
        "goal >= 300,000 /s",
    )


def main() -> None:
    simd = p.NATIVE and _native_simd()
    print(f"  native: {p.NATIVE} (SSSE3 SKINNY: {simd}); one thread; CPU-time figures")
    bench_bundle()
    bench_decrypt()
    bench_hello()
    bench_skinny()


if __name__ == "__main__":
    main()
