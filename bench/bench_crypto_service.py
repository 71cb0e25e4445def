"""Benchmark of the gRPC crypto service: ``python -m bench crypto_service``.

Starts the database and ``robert crypto`` as its own process (``simulator.system.LocalSystem``, so its
CPU time can be read), then prints: CreateRegistration/s, AuthenticateRequest-with-bundle/s and the
server's CPU ms per call, AuthenticateRequests (batches of 100) per request, and ValidateContacts
HELLOs/s for a batch of 1000 contacts x 100 HELLOs. Phones are the simulator's
(``simulator.phone.Phone``), talking to the service directly. Twice: with the file key store, then
with the PKCS#11 one on a SoftHSM2 token (see bench/bench_keystore.py); the server CPU of that run
includes SoftHSM2's work, done in the crypto process.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.bench_keystore import pkcs11_store, softhsm_env
from crypto_backend import protocol
from crypto_backend.keystore import FileKeyStore, KeyStore
from robert_common.clock import Clock, ServiceTime
from robert_common.settings import Settings, load_settings
from robert_server.crypto_client import (
    AuthRequest,
    Bundle,
    ContactToValidate,
    CryptoClient,
    CryptoError,
    RequestType,
)
from simulator.phone import Phone
from simulator.system import LocalSystem, cpu_seconds

CONCURRENCY = 16
REGISTRATIONS = 1000  # also the phones of the ValidateContacts batch
STATUS_CALLS = 2000
HELLOS_PER_CONTACT = 100


async def _run(calls: Sequence[Callable[[], Awaitable[object]]], concurrency: int) -> float:
    """Run the calls with ``concurrency`` in flight; return the wall time."""
    queue = iter(calls)

    async def worker() -> None:
        for call in queue:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _bench(settings: Settings, pid: int, store: KeyStore, service: ServiceTime) -> None:
    client = CryptoClient.from_settings(settings, "api")  # mutual TLS, as the API
    matcher = CryptoClient.from_settings(settings, "matcher")
    for _ in range(100):
        try:
            await client.registration_public_key()
            break
        except CryptoError:
            await asyncio.sleep(0.1)
    server_spki = store.registration_public_key()
    epoch = service.current_epoch()
    bundle_days = 4

    # CreateRegistration
    phones = [Phone(server_public_key=server_spki) for _ in range(REGISTRATIONS)]
    registrations: list[bytes] = [b""] * REGISTRATIONS

    def register(i: int) -> Callable[[], Awaitable[object]]:
        async def call() -> None:
            reg = await client.create_registration(phones[i].public_key_spki, epoch, bundle_days, 0x21)
            registrations[i] = reg.id_a

        return call

    cpu0 = cpu_seconds(pid)
    wall = await _run([register(i) for i in range(REGISTRATIONS)], CONCURRENCY)
    cpu = cpu_seconds(pid) - cpu0
    print(
        f"CreateRegistration: {REGISTRATIONS / wall:8.0f} /s  (4-day bundle, {CONCURRENCY} in flight), "
        f"server CPU {1000 * cpu / REGISTRATIONS:.2f} ms/call"
    )

    # AuthenticateRequest with a fresh bundle (/status)
    for phone in phones:
        phone.derive_keys()
    k_macs = [phone.k_mac or b"" for phone in phones]
    k_s = store.day_key(service.day_of_epoch(epoch))
    assert k_s is not None
    t = Clock().ntp_now()
    requests = []
    for i in range(STATUS_CALLS):
        j = i % REGISTRATIONS
        ebid = protocol.encrypt_ebid(k_s, epoch, registrations[j])
        mac = protocol.request_mac(k_macs[j], protocol.SALT_STATUS, ebid, epoch, t)
        requests.append((ebid, mac))
    bundle = Bundle(epoch, bundle_days, 0x21)

    def status(i: int) -> Callable[[], Awaitable[object]]:
        ebid, mac = requests[i]
        return lambda: client.authenticate(ebid, epoch, t, mac, RequestType.STATUS, bundle=bundle)

    cpu0 = cpu_seconds(pid)
    wall = await _run([status(i) for i in range(STATUS_CALLS)], CONCURRENCY)
    cpu = cpu_seconds(pid) - cpu0
    print(
        f"AuthenticateRequest+bundle: {STATUS_CALLS / wall:8.0f} /s  ({CONCURRENCY} in flight), "
        f"server CPU {1000 * cpu / STATUS_CALLS:.2f} ms/call (identity read included)"
    )

    # AuthenticateRequests: the API's micro-batches of /status, 100 per call (one $in read, N opens)
    batch = 100
    calls = []
    for k in range(0, STATUS_CALLS, batch):
        items = [
            AuthRequest(requests[i][0], epoch, t, requests[i][1], RequestType.STATUS, bundle=None)
            for i in range(k, k + batch)
        ]
        calls.append(functools.partial(client.authenticate_many, items))
    first = await calls[0]()
    assert all(not isinstance(r, CryptoError) for r in first), "a batched request failed"
    cpu0 = cpu_seconds(pid)
    wall = await _run(calls, 4)
    cpu = cpu_seconds(pid) - cpu0
    print(
        f"AuthenticateRequests x{batch} (no bundle): {STATUS_CALLS / wall:8.0f} requests/s, "
        f"server CPU {1e6 * cpu / STATUS_CALLS:.0f} µs/request"
    )

    # ValidateContacts: 1000 contacts x 100 HELLOs, one per registered phone
    start = service.epoch_start(epoch)
    times = [start + 5 * k for k in range(HELLOS_PER_CONTACT)]
    k_g = store.federation_key()
    contacts = []
    for j in range(REGISTRATIONS):
        ebid = protocol.encrypt_ebid(k_s, epoch, registrations[j])
        ecc = protocol.encrypt_country_code(k_g, ebid, 0x21)
        macs = [protocol.hello_mac(k_macs[j], ecc, ebid, tt & 0xFFFF) for tt in times]
        contacts.append(ContactToValidate.from_lists(ebid, ecc, times, [tt & 0xFFFF for tt in times], macs))
    hellos = REGISTRATIONS * HELLOS_PER_CONTACT
    best = float("inf")
    for _ in range(3):
        cpu0 = cpu_seconds(pid)
        started = time.perf_counter()
        results = await matcher.validate_contacts(contacts)
        wall = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu0
        best = min(best, wall)
    valid = sum(int(r.valid_hellos.sum()) for r in results)
    assert valid == hellos, f"only {valid} of {hellos} HELLOs valid"
    print(
        f"ValidateContacts: {hellos / best:8.0f} HELLOs/s  ({REGISTRATIONS} contacts x {HELLOS_PER_CONTACT} "
        f"HELLOs in {best * 1000:.0f} ms, identities read with $in in chunks of 50; "
        f"server CPU {cpu * 1000:.0f} ms per batch)"
    )
    await client.close()
    await matcher.close()


def _client_settings(system: LocalSystem) -> Settings:
    return system.client_settings().model_copy(update={"crypto_timeout": 120.0})


def main() -> None:
    service = ServiceTime(load_settings().time_start_date, Clock())
    print("--- key store: file", flush=True)
    with LocalSystem(("crypto",)) as system:
        store: KeyStore = FileKeyStore.load(
            Path(system.env["ROBERT_KEYSTORE_PATH"]), system.env["ROBERT_KEYSTORE_PASSPHRASE"].encode()
        )
        asyncio.run(_bench(_client_settings(system), system.pids()["crypto"], store, service))
    hsm = softhsm_env("service")
    if hsm is None:
        print("(PKCS#11 not measured: SoftHSM2 is not installed; scripts/test-deps installs it)")
        return
    print("--- key store: pkcs11 (SoftHSM2)", flush=True)
    with LocalSystem(("crypto",), env=hsm) as system:  # `robert keys init` creates the keys in the token
        store = pkcs11_store(hsm, create=False)
        try:
            asyncio.run(_bench(_client_settings(system), system.pids()["crypto"], store, service))
        finally:
            store.close()


if __name__ == "__main__":
    main()
