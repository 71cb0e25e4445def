"""The kernels behind the protocol operations: the native ones (HMAC-SHA256 portable and SHA-NI, batch HELLO
checks, the tuples JSON formatter, the AES input padding) against the standard library, and the pure-Python
ones (``_pure.py``) against the native ones, bytes and errors alike."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_backend import protocol as p
from crypto_backend.protocol import _pure as pure
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


@pytest.mark.usefixtures("protocol_backend")
def test_verify_hello_macs_takes_mixed_times_and_bad_macs() -> None:
    c = protocol_cases()[0]
    t = int.from_bytes(c.hello_time16, "big")
    times: list[bytes | int] = [c.hello_time16, t, t + 65_536, t, t]
    macs = [c.hello_mac, c.hello_mac, c.hello_mac, c.hello_mac[:4], "not bytes"]
    assert p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, times, macs) == [True, True, True, False, False]  # type: ignore[arg-type]
    assert p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, [], []) == []


def test_pure_python_hello_path_agrees() -> None:
    c = protocol_cases()[1]
    times = [c.hello_time16, bytes(2), int.from_bytes(c.hello_time16, "big")]
    macs = [c.hello_mac, c.hello_mac, c.hello_mac]
    expected = p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, times, macs)
    with p.use_backend(p.PURE_BACKEND):
        assert p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, times, macs) == expected == [True, False, True]
        assert p.hello_mac(c.k_mac, c.ecc, c.ebid, c.hello_time16) == c.hello_mac


# --- the pure kernels keep the native kernels' contract -------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    k_mac=st.binary(min_size=32, max_size=32),
    head=st.binary(min_size=9, max_size=9),
    times=st.lists(st.integers(0, 1 << 40) | st.binary(min_size=2, max_size=2), max_size=6),
    data=st.data(),
)
def test_pure_hello_kernels_equal_the_native_ones(k_mac: bytes, head: bytes, times: list, data) -> None:
    ecc, ebid = head[:1], head[1:]
    macs = [data.draw(st.binary(min_size=4, max_size=6)) for _ in times]
    assert pure.verify_hello_macs(k_mac, head, times, macs) == native.verify_hello_macs(
        k_mac, head, times, macs
    )
    for t, mac in zip(times, macs, strict=True):
        t2 = t if isinstance(t, bytes) else (t & 0xFFFF).to_bytes(2, "big")
        assert pure.hello_mac(k_mac, ecc, ebid, t2) == native.hello_mac(k_mac, ecc, ebid, t2)
        assert pure.verify_hello_mac(k_mac, ecc, ebid, t2, mac) == native.verify_hello_mac(
            k_mac, ecc, ebid, t2, mac
        )


@settings(max_examples=30, deadline=None)
@given(key=st.binary(max_size=64), msg=st.binary(max_size=55), n=st.integers(0, 12), data=st.data())
def test_pure_kernels_equal_the_native_ones(key: bytes, msg: bytes, n: int, data) -> None:
    assert pure.hmac_sha256(key, msg) == native.hmac_sha256(key, msg)
    ebids = data.draw(st.binary(min_size=8 * n, max_size=8 * n))
    eccs = data.draw(st.binary(min_size=n, max_size=n))
    assert pure.pad16(ebids) == native.pad16(ebids)
    first = data.draw(st.integers(0, 1 << 32))
    assert pure.tuples_json(first, ebids, eccs) == native.tuples_json(first, ebids, eccs)


KERNEL_REFUSALS = {
    "hello short key": ("hello_mac", (bytes(31), b"x", bytes(8), bytes(2))),
    "hello int time": ("hello_mac", (bytes(32), b"x", bytes(8), 5)),
    "verify short ebid": ("verify_hello_mac", (bytes(32), b"x", bytes(7), bytes(2), bytes(5))),
    "verify mac not bytes": ("verify_hello_mac", (bytes(32), b"x", bytes(8), bytes(2), None)),
    "batch ragged": ("verify_hello_macs", (bytes(32), bytes(9), [1, 2], [bytes(5)])),
    "batch short head": ("verify_hello_macs", (bytes(32), bytes(8), [1], [bytes(5)])),
    "batch 3-byte time": ("verify_hello_macs", (bytes(32), bytes(9), [b"abc"], [bytes(5)])),
    "batch float time": ("verify_hello_macs", (bytes(32), bytes(9), [1.0], [bytes(5)])),
    "batch bool time": ("verify_hello_macs", (bytes(32), bytes(9), [True], [bytes(5)])),
    "batch not a sequence": ("verify_hello_macs", (bytes(32), bytes(9), 5, [bytes(5)])),
    "pad16 ragged": ("pad16", (bytes(9),)),
    "pad16 int": ("pad16", (8,)),
    "json count mismatch": ("tuples_json", (0, bytes(8), b"")),
}


@pytest.mark.parametrize("name", list(KERNEL_REFUSALS))
@pytest.mark.parametrize("kernels", [native, pure], ids=["native", "pure"])
def test_kernels_refuse_the_same_input(kernels, name: str) -> None:
    """The operations rely on a refused input raising ValueError or TypeError, on either backend."""
    function, args = KERNEL_REFUSALS[name]
    with pytest.raises((ValueError, TypeError)):
        getattr(kernels, function)(*args)


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
