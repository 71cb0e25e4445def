"""The protocol operations (PROTOCOL.md sections 2 to 5) against every vector, and their bulk forms."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto_backend import protocol as p
from crypto_backend.protocol import _pure
from tests.crypto_backend.vectors import ProtocolCase, protocol_cases

# Every test here runs on both backends (tests/crypto_backend/conftest.py).
pytestmark = pytest.mark.usefixtures("protocol_backend")

CASES = protocol_cases()
# The backend fixture is the same for every example of a test: hypothesis may share it.
examples = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SALTS = {
    "status": p.SALT_STATUS,
    "unregister": p.SALT_UNREGISTER,
    "deleteExposureHistory": p.SALT_DELETE_HISTORY,
}


def case_params():
    return pytest.mark.parametrize("c", CASES, ids=[str(c.epoch_id) for c in CASES])


def server_key(c: ProtocolCase) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(c.server_private_pkcs8, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


# --- every vector, every primitive -------------------------------------------------------------------


def test_salts_follow_the_protocol() -> None:
    assert (p.SALT_HELLO, p.SALT_STATUS, p.SALT_UNREGISTER, p.SALT_DELETE_HISTORY) == (1, 2, 3, 4)
    assert (p.EBID_SIZE, p.ECC_SIZE, p.EPOCHS_PER_DAY) == (8, 1, 96)


@case_params()
def test_ebid_vector(c: ProtocolCase) -> None:
    assert p.encrypt_ebid(c.k_s, c.epoch_id, c.id_a) == c.ebid
    assert p.decrypt_ebid(c.k_s, c.ebid) == (c.epoch_id, c.id_a)


@case_params()
def test_ebid_vector_in_bulk_forms(c: ProtocolCase) -> None:
    assert p.encrypt_ebids(c.k_s, [c.epoch_id], c.id_a) == [c.ebid]
    assert p.decrypt_ebids(c.k_s, [c.ebid]) == [(c.epoch_id, c.id_a)]
    assert p.encrypt_ebids_packed(c.k_s, c.epoch_id, 1, c.id_a) == c.ebid
    assert p.decrypt_ebids_packed(c.k_s, c.ebid) == c.epoch_id.to_bytes(3, "big") + c.id_a


@case_params()
def test_ecc_vector(c: ProtocolCase) -> None:
    assert p.encrypt_country_code(c.k_g, c.ebid, c.country_code) == c.ecc
    assert p.country_code(c.k_g, c.ebid, c.ecc) == c.country_code
    assert p.encrypt_country_codes(c.k_g, c.ebid, c.country_code) == c.ecc
    assert p.country_codes(c.k_g, c.ebid, c.ecc) == bytes([c.country_code])


@case_params()
def test_key_derivation_vector(c: ProtocolCase) -> None:
    key = server_key(c)
    public = serialization.load_der_public_key(c.client_public_spki)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert key.exchange(ec.ECDH(), public) == c.shared_secret
    assert p.derive_client_keys(key, c.client_public_spki) == (c.k_mac, c.k_tuples)


@case_params()
def test_hello_mac_vector(c: ProtocolCase) -> None:
    assert p.hello_mac(c.k_mac, c.ecc, c.ebid, c.hello_time16) == c.hello_mac
    assert p.hello_mac(c.k_mac, c.ecc, c.ebid, int.from_bytes(c.hello_time16, "big")) == c.hello_mac
    assert p.verify_hello_mac(c.k_mac, c.ecc, c.ebid, c.hello_time16, c.hello_mac)
    bad = bytes([c.hello_mac[0] ^ 1]) + c.hello_mac[1:]
    assert not p.verify_hello_mac(c.k_mac, c.ecc, c.ebid, c.hello_time16, bad)
    assert p.verify_hello_macs(
        c.k_mac, c.ecc, c.ebid, [c.hello_time16, c.hello_time16], [c.hello_mac, bad]
    ) == [
        True,
        False,
    ]


@case_params()
@pytest.mark.parametrize("name", list(SALTS))
def test_request_mac_vector(c: ProtocolCase, name: str) -> None:
    salt, mac = SALTS[name], c.request_macs[name]
    assert p.request_mac(c.k_mac, salt, c.ebid, c.epoch_id, c.request_time32) == mac
    assert p.request_mac(c.k_mac, salt, c.ebid, c.epoch_id, int.from_bytes(c.request_time32, "big")) == mac
    assert p.verify_request_mac(c.k_mac, salt, c.ebid, c.epoch_id, c.request_time32, mac)
    other = p.SALT_STATUS if salt != p.SALT_STATUS else p.SALT_UNREGISTER
    assert not p.verify_request_mac(c.k_mac, other, c.ebid, c.epoch_id, c.request_time32, mac)
    assert not p.verify_request_mac(c.k_mac, salt, c.ebid, c.epoch_id + 1, c.request_time32, mac)


@case_params()
def test_sealed_tuples_vector(c: ProtocolCase) -> None:
    assert p.open_tuples(c.k_tuples, c.tuples_sealed) == c.tuples_plaintext


@case_params()
def test_tuples_json_vector(c: ProtocolCase) -> None:
    assert p.tuples_json(c.epoch_id, c.ebid, c.ecc) == c.tuples_plaintext


@case_params()
def test_one_epoch_bundle_reproduces_the_vector(c: ProtocolCase) -> None:
    """The last epoch of a day with bundle_days=1 is a one-tuple bundle: exactly the vector's plaintext."""
    last = c.epoch_id - c.epoch_id % 96 + 95
    built = p.build_bundle({last // 96: c.k_s}, c.k_g, c.id_a, last, 1, c.country_code)
    entry = json.loads(built)[0]
    assert entry["epochId"] == last
    ebid = base64.b64decode(entry["key"]["ebid"])
    assert p.decrypt_ebid(c.k_s, ebid) == (last, c.id_a)
    if last == c.epoch_id:
        assert built == c.tuples_plaintext


# --- bulk forms equal the single ones ----------------------------------------------------------------

key24 = st.binary(min_size=24, max_size=24)
key32 = st.binary(min_size=32, max_size=32)
id_as = st.binary(min_size=5, max_size=5)
epochs = st.integers(min_value=0, max_value=(1 << 24) - 1)


@examples
@given(k_s=key24, id_a=id_as, epoch_ids=st.lists(epochs, max_size=12))
def test_bulk_ebids_equal_single(k_s: bytes, id_a: bytes, epoch_ids: list[int]) -> None:
    ebids = p.encrypt_ebids(k_s, epoch_ids, id_a)
    assert ebids == [p.encrypt_ebid(k_s, e, id_a) for e in epoch_ids]
    assert p.decrypt_ebids(k_s, ebids) == [(e, id_a) for e in epoch_ids]


@examples
@given(k_s=key24, id_a=id_as, first=epochs, count=st.integers(min_value=0, max_value=20))
def test_packed_ebids_equal_single(k_s: bytes, id_a: bytes, first: int, count: int) -> None:
    packed = p.encrypt_ebids_packed(k_s, first, count, id_a)
    assert packed == b"".join(p.encrypt_ebid(k_s, first + i, id_a) for i in range(count))
    expected = b"".join(((first + i) & 0xFFFFFF).to_bytes(3, "big") + id_a for i in range(count))
    assert p.decrypt_ebids_packed(k_s, packed) == expected


@examples
@given(k_g=key32, ebids=st.lists(st.binary(min_size=8, max_size=8), max_size=10), cc=st.integers(0, 255))
def test_bulk_country_codes_equal_single(k_g: bytes, ebids: list[bytes], cc: int) -> None:
    eccs = p.encrypt_country_codes(k_g, b"".join(ebids), cc)
    assert eccs == b"".join(p.encrypt_country_code(k_g, e, cc) for e in ebids)
    assert p.country_codes(k_g, b"".join(ebids), eccs) == bytes([cc] * len(ebids))
    assert [p.country_code(k_g, e, eccs[i : i + 1]) for i, e in enumerate(ebids)] == [cc] * len(ebids)


@examples
@given(
    k_mac=key32,
    ebid=st.binary(min_size=8, max_size=8),
    times=st.lists(st.integers(0, 0xFFFF), max_size=8),
    flip=st.integers(0, 7),
)
def test_batch_hello_verification_equals_single(
    k_mac: bytes, ebid: bytes, times: list[int], flip: int
) -> None:
    macs = [p.hello_mac(k_mac, b"\x21", ebid, t) for t in times]
    if macs and flip < len(macs):
        macs[flip] = bytes(5)
    assert p.verify_hello_macs(k_mac, b"\x21", ebid, times, macs) == [
        p.verify_hello_mac(k_mac, b"\x21", ebid, t, m) for t, m in zip(times, macs, strict=True)
    ]


@examples
@given(first=st.integers(0, (1 << 32) - 400), n=st.integers(0, 20), data=st.data())
def test_tuples_json_equals_the_pure_formatter_and_parses(first: int, n: int, data) -> None:
    ebids = data.draw(st.binary(min_size=8 * n, max_size=8 * n))
    eccs = data.draw(st.binary(min_size=n, max_size=n))
    out = p.tuples_json(first, ebids, eccs)
    assert out == _pure.tuples_json(first, ebids, eccs)
    assert json.loads(out) == [
        {
            "epochId": first + i,
            "key": {
                "ebid": base64.b64encode(ebids[8 * i : 8 * i + 8]).decode(),
                "ecc": base64.b64encode(eccs[i : i + 1]).decode(),
            },
        }
        for i in range(n)
    ]


@examples
@given(k_tuples=key32, plain=st.binary(max_size=2000))
def test_seal_open_round_trip(k_tuples: bytes, plain: bytes) -> None:
    sealed = p.seal_tuples(k_tuples, plain)
    assert len(sealed) == 12 + len(plain) + 16
    assert p.open_tuples(k_tuples, sealed) == plain


def test_sealing_uses_a_fresh_iv() -> None:
    assert p.seal_tuples(bytes(32), b"[]")[:12] != p.seal_tuples(bytes(32), b"[]")[:12]


# --- bundles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "days", "count"), [(0, 4, 384), (95, 1, 1), (96 * 7 + 10, 4, 86 + 288), (5, 1, 91)]
)
def test_bundle_epochs(first: int, days: int, count: int) -> None:
    assert p.bundle_epochs(first, days) == count


@pytest.mark.parametrize("as_function", [False, True])
def test_bundle_uses_the_key_of_each_epochs_day(as_function: bool) -> None:
    c, first = CASES[0], 100 * 96 + 90
    days = {d: bytes([d % 256, 7]) * 12 for d in range(100, 104)}
    day_keys = days.__getitem__ if as_function else days
    tuples = json.loads(p.build_bundle(day_keys, c.k_g, c.id_a, first, 4, 0x21))
    assert [t["epochId"] for t in tuples] == list(range(first, first + 6 + 3 * 96))
    for t in tuples:
        epoch, ebid = t["epochId"], base64.b64decode(t["key"]["ebid"])
        assert p.decrypt_ebid(days[epoch // 96], ebid) == (epoch, c.id_a)
        assert p.country_code(c.k_g, ebid, base64.b64decode(t["key"]["ecc"])) == 0x21


def test_a_full_bundle_has_384_tuples_and_opens() -> None:
    c = CASES[0]
    days = {d: bytes([d]) * 24 for d in range(10, 14)}
    sealed = p.seal_bundle(c.k_tuples, days, c.k_g, c.id_a, 10 * 96, 4, 0x21)
    plain = p.open_tuples(c.k_tuples, sealed)
    assert plain == p.build_bundle(days, c.k_g, c.id_a, 10 * 96, 4, 0x21)
    assert len(json.loads(plain)) == 384


def test_a_missing_day_key_is_a_no_day_key_error() -> None:
    c = CASES[0]
    with pytest.raises(p.NoDayKeyError):
        p.build_bundle({10: c.k_s}, c.k_g, c.id_a, 10 * 96, 2, 0x21)
    with pytest.raises(p.NoDayKeyError):
        p.build_bundle(lambda day: None, c.k_g, c.id_a, 10 * 96, 1, 0x21)  # type: ignore[arg-type,return-value]
    with pytest.raises(p.NoDayKeyError):
        p.build_bundle({10: c.k_s}.__getitem__, c.k_g, c.id_a, 10 * 96, 2, 0x21)
