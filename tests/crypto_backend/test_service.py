"""Integration tests of the gRPC crypto service: the real grpc.aio server and the real embedded database.

Phones are simulated with the protocol primitives (their ECDH side, MACs, HELLOs), as the app does.
"""

from __future__ import annotations

import datetime as dt
import secrets

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto_backend import protocol
from crypto_backend.identities import COLLECTION
from robert_common.clock import EPOCHS_PER_DAY, date_to_ntp
from robert_common.rpc import crypto_pb2 as pb
from robert_common.settings import load_settings
from robert_server.crypto_client import (
    AuthRequest,
    Bundle,
    ContactStatus,
    ContactToValidate,
    CryptoClient,
    CryptoError,
    HelloVerdict,
    RequestType,
)
from simulator.phone import Phone
from tests.fixtures.crypto import CryptoService, KnownPhone

STATUS, UNREGISTER = protocol.SALT_STATUS, protocol.SALT_UNREGISTER


async def _status(svc: CryptoService, phone: KnownPhone, *, bundle: bool = False, epoch: int | None = None):
    epoch = svc.epoch_now() if epoch is None else epoch
    ebid, _ = phone.tuples[epoch]
    t = svc.clock.ntp_now()
    mac = protocol.request_mac(phone.k_mac, STATUS, ebid, epoch, t)
    b = Bundle(svc.epoch_now(), svc.settings.bundle_days, svc.settings.country_code) if bundle else None
    return await svc.client.authenticate(ebid, epoch, t, mac, RequestType.STATUS, bundle=b)


def _check_bundle(
    svc: CryptoService,
    phone: KnownPhone,
    bundle: dict[int, tuple[bytes, bytes]],
    first_epoch: int,
    bundle_days: int,
) -> None:
    epochs = list(bundle)
    count = (EPOCHS_PER_DAY - first_epoch % EPOCHS_PER_DAY) + EPOCHS_PER_DAY * (bundle_days - 1)
    assert epochs == list(range(first_epoch, first_epoch + count))
    for epoch in (epochs[0], epochs[len(epochs) // 2], epochs[-1]):
        ebid, ecc = bundle[epoch]
        assert protocol.decrypt_ebid(svc.day_key_of_epoch(epoch), ebid) == (epoch & 0xFFFFFF, phone.id_a)
        assert protocol.country_code(svc.keystore.federation_key(), ebid, ecc) == svc.settings.country_code


async def _expect(call, code: grpc.StatusCode, reason: str) -> CryptoError:
    with pytest.raises(CryptoError) as info:
        await call
    assert (info.value.code, info.value.reason) == (code, reason)
    assert not info.value.unavailable
    return info.value


# --- registration and authenticated requests ------------------------------------------------------


async def test_registration_then_status_with_bundle(crypto_service: CryptoService) -> None:
    svc = crypto_service
    phone = await svc.register_phone()
    assert len(phone.id_a) == 5
    _check_bundle(svc, phone, phone.tuples, svc.epoch_now(), svc.settings.bundle_days)
    assert await svc.db[COLLECTION].count_documents({"_id": phone.id_a}) == 1

    svc.clock.advance(3600)  # four epochs later the phone polls /status with the current EBID
    auth = await _status(svc, phone, bundle=True)
    assert auth.id_a == phone.id_a and auth.epoch_id == svc.epoch_now()
    assert auth.sealed_tuples is not None
    fresh = phone.open_bundle(auth.sealed_tuples)  # fresh bundle opens with the phone's K_A,tuples
    _check_bundle(svc, phone, fresh, svc.epoch_now(), svc.settings.bundle_days)

    plain = await _status(svc, phone)
    assert plain.sealed_tuples is None


async def test_bundle_crosses_days_and_auto_rotates(crypto_service: CryptoService) -> None:
    svc = crypto_service
    phone = await svc.register_phone(bundle_days=2)
    _check_bundle(svc, phone, phone.tuples, svc.epoch_now(), 2)
    svc.clock.advance(4 * 86_400)  # beyond the key horizon of the store: the service adds keys
    phone2 = await svc.register_phone()
    _check_bundle(svc, phone2, phone2.tuples, svc.epoch_now(), svc.settings.bundle_days)


async def test_request_mac_errors(crypto_service: CryptoService) -> None:
    svc = crypto_service
    phone = await svc.register_phone()
    epoch = svc.epoch_now()
    ebid, _ = phone.tuples[epoch]
    t = svc.clock.ntp_now()
    good = protocol.request_mac(phone.k_mac, STATUS, ebid, epoch, t)
    denied = grpc.StatusCode.PERMISSION_DENIED
    bad = bytes([good[0] ^ 1]) + good[1:]
    await _expect(svc.client.authenticate(ebid, epoch, t, bad, RequestType.STATUS), denied, "INVALID_MAC")
    # a /status MAC does not authorise /unregister (salts differ), nor another time
    await _expect(
        svc.client.authenticate(ebid, epoch, t, good, RequestType.UNREGISTER), denied, "INVALID_MAC"
    )
    await _expect(
        svc.client.authenticate(ebid, epoch, t + 1, good, RequestType.STATUS), denied, "INVALID_MAC"
    )
    # the EBID of another epoch of the same day
    await _expect(
        svc.client.authenticate(ebid, epoch - 1, t, good, RequestType.STATUS), denied, "EPOCH_MISMATCH"
    )
    unregister = protocol.request_mac(phone.k_mac, UNREGISTER, ebid, epoch, t)
    auth = await svc.client.authenticate(ebid, epoch, t, unregister, RequestType.UNREGISTER)
    assert auth.id_a == phone.id_a


async def test_unknown_identity_and_no_day_key(crypto_service: CryptoService) -> None:
    svc = crypto_service
    epoch = svc.epoch_now()
    stranger = svc.ebid(secrets.token_bytes(5), epoch)
    t = svc.clock.ntp_now()
    mac = secrets.token_bytes(32)
    await _expect(
        svc.client.authenticate(stranger, epoch, t, mac, RequestType.STATUS),
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_IDENTITY",
    )
    far = epoch + 60 * EPOCHS_PER_DAY  # beyond any key the store holds or would add
    await _expect(
        svc.client.authenticate(stranger, far, t, mac, RequestType.STATUS),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_KEY_FOR_DAY",
    )
    phone = Phone()
    await _expect(
        svc.client.create_registration(phone.public_key_spki, far, 4, 0x21),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_KEY_FOR_DAY",
    )
    assert await svc.db[COLLECTION].count_documents({}) == 0  # nothing half-written


def _off_curve_spki() -> bytes:
    spki = bytearray(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    spki[-1] ^= 1  # Y no longer matches X: not a point of P-256
    return bytes(spki)


def _p384_spki() -> bytes:
    return (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    "key",
    [b"", b"garbage", secrets.token_bytes(91), _off_curve_spki(), _p384_spki()],
    ids=["empty", "garbage", "random", "off-curve", "p384"],
)
async def test_registration_bad_keys(crypto_service: CryptoService, key: bytes) -> None:
    svc = crypto_service
    error = await _expect(
        svc.client.create_registration(key, svc.epoch_now(), 4, 0x21),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BAD_ARGUMENT",
    )
    assert key.hex() not in str(error) or not key
    assert await svc.db[COLLECTION].count_documents({}) == 0


async def test_bad_arguments(crypto_service: CryptoService) -> None:
    svc = crypto_service
    epoch, t = svc.epoch_now(), svc.clock.ntp_now()
    c = svc.client
    bad = (grpc.StatusCode.INVALID_ARGUMENT, "BAD_ARGUMENT")
    phone = Phone()
    await _expect(c.create_registration(phone.public_key_spki, epoch, 0, 0x21), *bad)
    await _expect(c.create_registration(phone.public_key_spki, epoch, 4, 300), *bad)
    await _expect(c.authenticate(b"\x01" * 7, epoch, t, b"\x00" * 32, RequestType.STATUS), *bad)
    await _expect(c.authenticate(b"\x01" * 8, epoch, b"\x00" * 3, b"\x00" * 32, RequestType.STATUS), *bad)
    await _expect(c.authenticate(b"\x01" * 8, epoch, t, b"\x00" * 31, RequestType.STATUS), *bad)
    await _expect(c.authenticate(b"\x01" * 8, epoch, t, b"\x00" * 32, 0), *bad)
    await _expect(c.authenticate(b"\x01" * 8, epoch, t, b"\x00" * 32, 1), *bad)  # the HELLO salt
    await _expect(
        c.authenticate(b"\x01" * 8, epoch, t, b"\x00" * 32, 2, bundle=Bundle(epoch, 99, 0x21)), *bad
    )
    await _expect(c.delete_identity(b"\x00" * 4), *bad)
    # still serving after all that
    assert await c.registration_public_key() == svc.keystore.registration_public_key()


async def test_delete_identity(crypto_service: CryptoService) -> None:
    svc = crypto_service
    phone = await svc.register_phone()
    assert await svc.client.delete_identity(phone.id_a) is True
    assert await svc.client.delete_identity(phone.id_a) is False
    await _expect(_status(svc, phone), grpc.StatusCode.NOT_FOUND, "UNKNOWN_IDENTITY")


async def test_unavailable_is_flagged(crypto_service: CryptoService) -> None:
    svc = crypto_service
    await svc.server.stop(None)
    client = CryptoClient(svc.address, timeout=0.5)
    try:
        with pytest.raises(CryptoError) as info:
            await client.registration_public_key()
        assert info.value.unavailable
    finally:
        await client.close()


async def test_picks_up_keys_rotated_by_another_process(crypto_service: CryptoService) -> None:
    from crypto_backend.keystore import FileKeyStore

    svc = crypto_service
    other = FileKeyStore.load(svc.keystore.path, b"test passphrase")
    far_day = svc.clock.utcnow().date() + dt.timedelta(days=40)
    other.rotate(far_day, days_ahead=0, retention_days=10_000)
    day_index = (far_day - svc.settings.time_start_date).days
    assert svc.server.servicer.day_key(day_index) == other.day_key(far_day)


# --- ValidateContacts --------------------------------------------------------------------------------


def _contact(phone: KnownPhone, ebid: bytes, ecc: bytes, times: list[int], *, hello_times=None, bad_mac=()):
    """A Contact as the phone that heard it uploads it: each HELLO with its collection time."""
    hello_times = hello_times or [t & 0xFFFF for t in times]
    macs = []
    for i, th in enumerate(hello_times):
        mac = protocol.hello_mac(phone.k_mac, ecc, ebid, th)
        macs.append(bytes([mac[0] ^ 0x80]) + mac[1:] if i in bad_mac else mac)
    return ContactToValidate.from_lists(ebid, ecc, times, hello_times, macs)


async def test_validate_contacts_batch(crypto_service: CryptoService) -> None:
    svc = crypto_service
    phone = await svc.register_phone()
    p2 = await svc.register_phone()
    epoch = svc.epoch_now()
    start = svc.time.epoch_start(epoch)
    ebid = svc.ebid(phone.id_a, epoch)
    ecc = svc.ecc(ebid)

    # 0: valid, one HELLO with a bad MAC, one with a HELLO time far from its collection time,
    #    one collected two epochs later
    times = [start + 10 * i for i in range(20)]
    hello_times = [t & 0xFFFF for t in times]
    hello_times[5] = (hello_times[5] + 400) & 0xFFFF
    times[19] = start + 2 * 900 + 5
    hello_times[19] = times[19] & 0xFFFF
    valid = _contact(phone, ebid, ecc, times, hello_times=hello_times, bad_mac={3})
    # 1: foreign country
    foreign_ecc = svc.ecc(ebid, 0x22)
    foreign = _contact(phone, ebid, foreign_ecc, [start + 5])
    # 2: unknown identity (a well-formed EBID of an id_A never registered)
    stranger_ebid = svc.ebid(secrets.token_bytes(5), epoch)
    unknown = _contact(phone, stranger_ebid, svc.ecc(stranger_ebid), [start + 5, start + 65])
    # 3: random bytes as EBID
    junk_ebid = secrets.token_bytes(8)
    junk = _contact(phone, junk_ebid, svc.ecc(junk_ebid), [start + 5])
    # 4 and 5: day boundary. EBID of the last epoch of yesterday heard 60 s after midnight (within the
    # tolerance: yesterday's key is tried too), and the EBID of today's first epoch heard 100 s before
    midnight = date_to_ntp(svc.clock.utcnow().date())
    first_today = svc.time.epoch_id(midnight)
    ebid_y = svc.ebid(p2.id_a, first_today - 1)
    after_midnight = _contact(p2, ebid_y, svc.ecc(ebid_y), [midnight + 60, midnight + 120])
    ebid_t = svc.ebid(p2.id_a, first_today)
    before_midnight = _contact(p2, ebid_t, svc.ecc(ebid_t), [midnight - 100, midnight - 40])
    # 6: same EBID of yesterday heard 10 minutes after midnight: outside the tolerance, only today's key
    too_late = _contact(p2, ebid_y, svc.ecc(ebid_y), [midnight + 600])
    # 7: 16-bit wrap-around: collected when the low 16 bits are 65530, HELLO time 4 (10 s later) is
    # valid; one HELLO time 300 s off is not
    t_wrap = (start & ~0xFFFF) + 65530
    if t_wrap > start + 3000:
        t_wrap -= 1 << 16
    e_wrap = svc.time.epoch_id(t_wrap)
    ebid_w = svc.ebid(phone.id_a, e_wrap)
    wrap = _contact(
        phone,
        ebid_w,
        svc.ecc(ebid_w),
        [t_wrap, t_wrap + 1],
        hello_times=[(t_wrap + 10) & 0xFFFF, 0xFFFF & (t_wrap + 300)],
    )
    # 8 to 10: malformed
    short_macs = ContactToValidate(ebid, ecc, valid.time_collected, valid.time_from_hello, valid.macs[:-1])
    no_hellos = ContactToValidate(ebid, ecc, b"", b"", b"")
    short_ebid = ContactToValidate(
        ebid[:7], ecc, valid.time_collected[:4], valid.time_from_hello[:2], valid.macs[:5]
    )

    contacts = [valid, foreign, unknown, junk, after_midnight, before_midnight, too_late, wrap]
    contacts += [short_macs, no_hellos, short_ebid]
    results = await svc.matcher.validate_contacts(contacts)
    assert [r.status for r in results] == [
        ContactStatus.VALID,
        ContactStatus.FOREIGN_COUNTRY,
        ContactStatus.UNKNOWN_IDENTITY,
        ContactStatus.UNDECRYPTABLE,
        ContactStatus.VALID,
        ContactStatus.VALID,
        ContactStatus.UNDECRYPTABLE,
        ContactStatus.VALID,
        ContactStatus.MALFORMED,
        ContactStatus.MALFORMED,
        ContactStatus.MALFORMED,
    ]
    r = results[0]
    assert (r.id_a, r.epoch_id, r.country_code) == (phone.id_a, epoch, 0x21)
    expected = [HelloVerdict.VALID] * 20
    expected[3], expected[5], expected[19] = (
        HelloVerdict.BAD_MAC,
        HelloVerdict.TIME_MISMATCH,
        HelloVerdict.BAD_EPOCH,
    )
    assert list(r.verdicts) == expected
    assert r.valid_hellos.sum() == 17
    assert results[1].country_code == 0x22 and results[1].id_a is None
    assert (results[4].id_a, results[4].epoch_id) == (p2.id_a, first_today - 1)
    assert list(results[4].verdicts) == [HelloVerdict.VALID] * 2
    assert (results[5].id_a, results[5].epoch_id) == (p2.id_a, first_today)
    assert list(results[5].verdicts) == [HelloVerdict.VALID] * 2
    assert (results[7].id_a, results[7].epoch_id) == (phone.id_a, e_wrap)
    assert list(results[7].verdicts) == [HelloVerdict.VALID, HelloVerdict.TIME_MISMATCH]

    # a smaller tolerance given by the caller makes the midnight contact undecryptable
    strict = await svc.matcher.validate_contacts([after_midnight], hello_tolerance=30)
    assert strict[0].status == ContactStatus.UNDECRYPTABLE
    # another server country: every contact of ours becomes foreign
    other = await svc.matcher.validate_contacts([valid], server_country_code=0x22)
    assert other[0].status == ContactStatus.FOREIGN_COUNTRY and other[0].country_code == 0x21
    assert await svc.matcher.validate_contacts([]) == []


async def test_validate_contacts_garbage_never_crashes(crypto_service: CryptoService) -> None:
    svc = crypto_service
    rng = secrets.SystemRandom()
    contacts = []
    for _ in range(50):
        n = rng.randrange(0, 5)
        contacts.append(
            ContactToValidate(
                secrets.token_bytes(rng.choice([0, 7, 8, 9])),
                secrets.token_bytes(rng.choice([0, 1, 2])),
                secrets.token_bytes(4 * n + rng.choice([0, 0, 1])),
                secrets.token_bytes(2 * n),
                secrets.token_bytes(5 * n),
            )
        )
    results = await svc.matcher.validate_contacts(contacts)
    assert len(results) == 50
    assert all(r.status != ContactStatus.VALID for r in results)
    # ValidateContacts with a country code that does not fit a byte
    with pytest.raises(CryptoError) as info:
        await svc.matcher.validate_contacts(contacts[:1], server_country_code=999)
    assert info.value.reason == "BAD_ARGUMENT"
    assert pb.ErrorReason.Value(info.value.reason) == pb.BAD_ARGUMENT


async def test_robert_crypto_command(mongo_uri: str, tmp_path, test_pki) -> None:
    """``robert crypto`` serves from the configured key store and stops cleanly on SIGTERM."""
    import asyncio
    import os
    import signal
    import sys

    from crypto_backend.keystore import FileKeyStore
    from robert_common.clock import Clock, ServiceTime
    from robert_common.mongo import free_port, mongo_client

    store = FileKeyStore.create(tmp_path / "ks.json", b"cli test", scrypt_n=2**10)
    store.rotate(Clock().utcnow().date(), days_ahead=1, retention_days=20)
    port = free_port()
    database = f"t_cli_{secrets.token_hex(4)}"
    env = {
        **os.environ,
        "ROBERT_MONGODB_URI": mongo_uri,
        "ROBERT_CRYPTO_MONGODB_DATABASE": database,
        "ROBERT_DATA_DIR": str(tmp_path),
        "ROBERT_KEYSTORE_PATH": str(store.path),
        "ROBERT_KEYSTORE_PASSPHRASE": "cli test",
        "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{port}",
        "ROBERT_GRPC_TLS_DIR": str(test_pki),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "robert_server.cli", "crypto", env=env)
    settings = load_settings(crypto_address=f"127.0.0.1:{port}", crypto_timeout=1.0, grpc_tls_dir=test_pki)
    client = CryptoClient.from_settings(settings, "api")
    try:
        for _ in range(300):
            try:
                public = await client.registration_public_key()
                break
            except CryptoError as e:
                assert e.unavailable and proc.returncode is None
                await asyncio.sleep(0.1)
        assert public == store.registration_public_key()
        epoch = ServiceTime(dt.date(2020, 6, 1), Clock()).current_epoch()
        reg = await client.create_registration(Phone().public_key_spki, epoch, 1, 0x21)
        assert len(reg.id_a) == 5
    finally:
        await client.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        admin = mongo_client(mongo_uri)
        await admin.drop_database(database)
        await admin.close()


# --- AuthenticateRequests: the batch of the API's micro-batches ----------------------------------


async def test_batch_authentication_answers_each_request_as_the_unary_call_would(
    crypto_service: CryptoService,
) -> None:
    svc = crypto_service
    alice, bob = await svc.register_phone(), await svc.register_phone()
    epoch = svc.epoch_now()
    t = svc.clock.ntp_now()
    bundle = Bundle(epoch, svc.settings.bundle_days, svc.settings.country_code)

    def request(phone: KnownPhone, *, salt: int = STATUS, kind=RequestType.STATUS, **kw) -> AuthRequest:
        ebid, _ = phone.tuples[epoch]
        mac = protocol.request_mac(phone.k_mac, salt, ebid, epoch, t)
        return AuthRequest(
            ebid, kw.get("epoch", epoch), t, kw.get("mac", mac), kind, kw.get("bundle", bundle)
        )

    stranger_ebid = svc.ebid(secrets.token_bytes(5), epoch)
    far = epoch + 60 * EPOCHS_PER_DAY
    requests = [
        request(alice),
        request(bob, bundle=None),
        request(alice, mac=bytes(32)),  # bad MAC
        AuthRequest(stranger_ebid, epoch, t, bytes(32), RequestType.STATUS, bundle),  # unknown id_A
        request(bob, epoch=epoch - 1),  # EBID of another epoch
        AuthRequest(stranger_ebid, far, t, bytes(32), RequestType.STATUS),  # no day key
        AuthRequest(b"\x01" * 7, epoch, t, bytes(32), RequestType.STATUS),  # bad argument
        request(bob, salt=UNREGISTER, kind=RequestType.UNREGISTER),
        request(alice),  # the same phone twice in one batch
    ]
    results = await svc.client.authenticate_many(requests)
    assert len(results) == len(requests)
    ok = [r for r in results if not isinstance(r, CryptoError)]
    assert [r.id_a for r in ok] == [alice.id_a, bob.id_a, bob.id_a, alice.id_a]
    assert all(r.epoch_id == epoch for r in ok)
    first = results[0]
    assert not isinstance(first, CryptoError) and first.sealed_tuples is not None
    fresh = alice.open_bundle(first.sealed_tuples)  # a real bundle, under Alice's K_A,tuples
    _check_bundle(svc, alice, fresh, epoch, svc.settings.bundle_days)
    assert not isinstance(results[1], CryptoError) and results[1].sealed_tuples is None
    errors = {k: (r.code, r.reason) for k, r in enumerate(results) if isinstance(r, CryptoError)}
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert errors == {
        2: (denied, "INVALID_MAC"),
        3: (grpc.StatusCode.NOT_FOUND, "UNKNOWN_IDENTITY"),
        4: (denied, "EPOCH_MISMATCH"),
        5: (grpc.StatusCode.FAILED_PRECONDITION, "NO_KEY_FOR_DAY"),
        6: (grpc.StatusCode.INVALID_ARGUMENT, "BAD_ARGUMENT"),
    }
    for k, error in errors.items():  # the same answer as the unary call, request by request
        r = requests[k]
        unary = svc.client.authenticate(r.ebid, r.epoch_id, r.time, r.mac, r.request_type, bundle=r.bundle)
        await _expect(unary, *error)
    assert await svc.client.authenticate_many([]) == []


async def test_batch_authentication_fails_as_a_whole_when_the_service_is_down(
    crypto_service: CryptoService,
) -> None:
    svc = crypto_service
    phone = await svc.register_phone()
    epoch, t = svc.epoch_now(), svc.clock.ntp_now()
    ebid, _ = phone.tuples[epoch]
    one = AuthRequest(
        ebid, epoch, t, protocol.request_mac(phone.k_mac, STATUS, ebid, epoch, t), RequestType.STATUS
    )
    await svc.server.stop(None)
    with pytest.raises(CryptoError) as info:
        await svc.client.authenticate_many([one, one])
    assert info.value.unavailable
