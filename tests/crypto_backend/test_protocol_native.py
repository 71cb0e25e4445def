"""The native helpers behind the protocol operations: HMAC-SHA256 (portable and SHA-NI), batch HELLO checks,
the tuples JSON formatter and the AES input padding, each against the standard library."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_backend import protocol as p
from crypto_backend.protocol import _skinny as native
from tests.crypto_backend.vectors import protocol_cases


@pytest.fixture(params=[False, True], ids=["portable", "sha-ni"])
def sha_impl(request: pytest.FixtureRequest) -> Iterator[bool]:
    used = native._use_sha_ni(request.param)
    if request.param and not used:
        pytest.skip("this CPU has no SHA extensions")
    try:
        yield used
    finally:
        native._use_sha_ni(True)


@pytest.mark.parametrize("key_len", [0, 1, 31, 32, 33, 63, 64])
@pytest.mark.parametrize("msg_len", [0, 1, 12, 17, 54, 55])
def test_hmac_sha256_equals_the_standard_library(sha_impl: bool, key_len: int, msg_len: int) -> None:
    key, msg = bytes(range(7, 7 + key_len)), bytes(range(100, 100 + msg_len))
    assert native.hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256")


@settings(max_examples=50, deadline=None)
@given(key=st.binary(max_size=64), msg=st.binary(max_size=55))
def test_hmac_sha256_equals_the_standard_library_on_random_input(key: bytes, msg: bytes) -> None:
    for use_ni in (False, True):
        native._use_sha_ni(use_ni)
        assert native.hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256")
    native._use_sha_ni(True)


def test_hmac_sha256_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError):
        native.hmac_sha256(bytes(65), b"")
    with pytest.raises(ValueError):
        native.hmac_sha256(bytes(32), bytes(56))


@pytest.mark.parametrize("c", protocol_cases(), ids=lambda c: str(c.epoch_id))
def test_batch_hello_check_on_the_vectors(sha_impl: bool, c) -> None:
    head, t = c.ecc + c.ebid, c.hello_time16
    bad = bytes([c.hello_mac[0] ^ 0x80]) + c.hello_mac[1:]
    macs = [c.hello_mac, bad, c.hello_mac, c.hello_mac[:4], bytearray(c.hello_mac)]
    times = [t, t, int.from_bytes(t, "big"), t, t]
    assert native.verify_hello_macs(c.k_mac, head, times, macs) == [True, False, True, False, False]


def test_batch_hello_check_refuses_ragged_input() -> None:
    with pytest.raises(ValueError):
        native.verify_hello_macs(bytes(32), bytes(9), [1, 2], [bytes(5)])
    with pytest.raises(ValueError):
        native.verify_hello_macs(bytes(32), bytes(8), [1], [bytes(5)])
    with pytest.raises(TypeError):
        native.verify_hello_macs(bytes(32), bytes(9), [b"abc"], [bytes(5)])
    with pytest.raises(TypeError):
        native.verify_hello_macs(bytes(32), bytes(9), [1.0], [bytes(5)])
    with pytest.raises(TypeError):
        native.verify_hello_macs(bytes(32), bytes(9), 5, [bytes(5)])


def test_verify_hello_macs_takes_mixed_times_and_bad_macs() -> None:
    c = protocol_cases()[0]
    t = int.from_bytes(c.hello_time16, "big")
    times: list[bytes | int] = [c.hello_time16, t, t + 65_536, t, t]
    macs = [c.hello_mac, c.hello_mac, c.hello_mac, c.hello_mac[:4], "not bytes"]
    assert p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, times, macs) == [True, True, True, False, False]  # type: ignore[arg-type]
    assert p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, [], []) == []


def test_pure_python_hello_path_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    c = protocol_cases()[1]
    times = [c.hello_time16, bytes(2), int.from_bytes(c.hello_time16, "big")]
    macs = [c.hello_mac, c.hello_mac, c.hello_mac]
    expected = p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, times, macs)
    monkeypatch.setattr(p, "NATIVE", False)
    monkeypatch.setattr(p, "_hmac_sha256", p._hmac_sha256_reference)
    assert p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, times, macs) == expected == [True, False, True]
    assert p.hello_mac(c.k_mac, c.ecc, c.ebid, c.hello_time16) == c.hello_mac


@settings(max_examples=30, deadline=None)
@given(ebids=st.binary(max_size=80).map(lambda b: b[: len(b) - len(b) % 8]))
def test_pad16(ebids: bytes) -> None:
    assert native.pad16(ebids) == b"".join(ebids[i : i + 8] + bytes(8) for i in range(0, len(ebids), 8))


def test_tuples_json_edges() -> None:
    assert native.tuples_json(0, b"", b"") == b"[]"
    big = (1 << 64) - 1  # the formatter's widest epoch number
    out = json.loads(native.tuples_json(big, bytes(8), b"\xff"))
    assert out == [{"epochId": big, "key": {"ebid": "AAAAAAAAAAA=", "ecc": "/w=="}}]
    many = native.tuples_json(2**32 - 1, bytes(range(256)) * 4, bytes(range(128)))
    assert len(json.loads(many)) == 128
    ebids = bytes(range(256)) * 4
    assert [base64.b64decode(t["key"]["ebid"]) for t in json.loads(many)] == [
        ebids[i : i + 8] for i in range(0, 1024, 8)
    ]
    with pytest.raises(ValueError):
        native.tuples_json(0, bytes(8), b"")
