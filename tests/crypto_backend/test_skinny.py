"""SKINNY-64-192: the reference and the native cipher against the vectors and against each other."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto_backend import protocol
from crypto_backend.protocol import _skinny as native
from crypto_backend.protocol import skinny as reference
from tests.crypto_backend.vectors import skinny_vectors

VECTORS = skinny_vectors()
keys = st.binary(min_size=24, max_size=24)
blocks = st.integers(min_value=0, max_value=9).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n))


def both_kernels(check: Callable[[], None]) -> None:
    """Run ``check`` with the table kernel and with the SSSE3 kernel (when the CPU has it)."""
    try:
        for simd in (False, True):
            native._use_simd(simd)
            check()
    finally:
        native._use_simd(True)


@pytest.fixture(params=[False, True], ids=["tables", "ssse3"])
def kernel(request: pytest.FixtureRequest) -> Iterator[None]:
    if native._use_simd(request.param) != request.param:
        pytest.skip("this CPU has no SSSE3")
    try:
        yield
    finally:
        native._use_simd(True)


def test_the_native_cipher_is_built_and_used() -> None:
    assert protocol.NATIVE
    assert protocol.SkinnyKey is native.Key


def test_the_first_vector_is_the_papers() -> None:
    v = VECTORS[0]
    assert v.key.hex() == "ed00c85b120d68618753e24bfd908f60b2dbb41b422dfcd0"
    assert (v.plaintext.hex(), v.ciphertext.hex()) == ("530c61d35e8663c3", "dd2cf1a8f330303c")


@pytest.mark.usefixtures("protocol_backend")
@pytest.mark.parametrize("v", VECTORS, ids=range(len(VECTORS)))
def test_each_backends_cached_key_matches_vector(v) -> None:
    key = protocol.skinny_key(v.key)
    assert isinstance(key, protocol.active_backend().Key)
    assert key.encrypt(v.plaintext) == v.ciphertext
    assert key.decrypt(v.ciphertext) == v.plaintext


@pytest.mark.parametrize("v", VECTORS, ids=range(len(VECTORS)))
def test_reference_matches_vector(v) -> None:
    assert reference.encrypt_block(v.key, v.plaintext) == v.ciphertext
    assert reference.decrypt_block(v.key, v.ciphertext) == v.plaintext


@pytest.mark.parametrize("v", VECTORS, ids=range(len(VECTORS)))
def test_native_matches_vector(kernel: None, v) -> None:
    key = native.Key(v.key)
    assert key.encrypt(v.plaintext) == v.ciphertext
    assert key.decrypt(v.ciphertext) == v.plaintext


def test_native_bulk_matches_all_vectors_at_once(kernel: None) -> None:
    """Each vector under its key, repeated to go through the 4-wide groups and a 3-block tail."""
    for v in VECTORS:
        key = native.Key(v.key)
        packed = v.plaintext * 7  # 4-block path plus a 3-block tail
        assert key.encrypt(packed) == v.ciphertext * 7
        assert key.decrypt(v.ciphertext * 7) == packed


@settings(max_examples=60, deadline=None)
@given(key=keys, data=blocks)
def test_native_encrypt_equals_reference(key: bytes, data: bytes) -> None:
    expected = reference.Key(key).encrypt(data)
    both_kernels(lambda: _assert_equal(native.Key(key).encrypt(data), expected))


@settings(max_examples=60, deadline=None)
@given(key=keys, data=blocks)
def test_native_decrypt_equals_reference(key: bytes, data: bytes) -> None:
    expected = reference.Key(key).decrypt(data)
    both_kernels(lambda: _assert_equal(native.Key(key).decrypt(data), expected))


@settings(max_examples=30, deadline=None)
@given(
    key=keys,
    first=st.integers(min_value=0, max_value=(1 << 32) - 1),
    count=st.integers(min_value=0, max_value=9),
    id_a=st.binary(min_size=5, max_size=5),
)
def test_native_epochs_equal_reference(key: bytes, first: int, count: int, id_a: bytes) -> None:
    expected = reference.Key(key).encrypt_epochs(first, count, id_a)
    both_kernels(lambda: _assert_equal(native.Key(key).encrypt_epochs(first, count, id_a), expected))


def test_epochs_are_the_low_24_bits_big_endian() -> None:
    key = native.Key(VECTORS[1].key)
    id_a = bytes.fromhex("0102030405")
    out = key.encrypt_epochs((1 << 24) - 2, 4, id_a)
    plain = key.decrypt(out)
    assert [plain[i : i + 8].hex() for i in range(0, 32, 8)] == [
        "fffffe0102030405",
        "ffffff0102030405",
        "0000000102030405",
        "0000010102030405",
    ]


@settings(max_examples=20, deadline=None)
@given(key=keys, n=st.integers(min_value=0, max_value=300))
def test_native_round_trip_in_bulk(key: bytes, n: int) -> None:
    data = os.urandom(8 * n)
    k = native.Key(key)
    both_kernels(lambda: _assert_equal(k.decrypt(k.encrypt(data)), data))


def test_kernels_agree_in_bulk() -> None:
    k, data = native.Key(os.urandom(24)), os.urandom(8 * 1001)
    native._use_simd(False)
    tables = (k.encrypt(data), k.decrypt(data), k.encrypt_epochs(77, 1001, b"abcde"))
    native._use_simd(True)
    assert (k.encrypt(data), k.decrypt(data), k.encrypt_epochs(77, 1001, b"abcde")) == tables


def _assert_equal(actual: bytes, expected: bytes) -> None:
    assert actual == expected


def test_key_accepts_any_buffer() -> None:
    v = VECTORS[0]
    assert native.Key(bytearray(v.key)).encrypt(memoryview(v.plaintext)) == v.ciphertext


@pytest.mark.parametrize("impl", [native.Key, reference.Key], ids=["native", "reference"])
def test_wrong_sizes_raise_value_error(impl) -> None:
    with pytest.raises(ValueError):
        impl(bytes(23))
    key = impl(bytes(24))
    with pytest.raises(ValueError):
        key.encrypt(bytes(9))
    with pytest.raises(ValueError):
        key.decrypt(bytes(7))
    with pytest.raises(ValueError):
        key.encrypt_epochs(0, 1, bytes(4))


def test_native_rejects_non_buffers() -> None:
    with pytest.raises(TypeError):
        native.Key("x" * 24)
    with pytest.raises(TypeError):
        native.Key(bytes(24)).encrypt("abcdefgh")


def test_key_repr_shows_no_key_bytes() -> None:
    assert "00" not in repr(native.Key(bytes(24)))


def test_bulk_calls_from_threads_agree() -> None:
    """The bulk loops run without the GIL: concurrent calls must still give the single-threaded answer."""
    key = native.Key(os.urandom(24))
    data = os.urandom(8 * 20_000)
    expected = key.encrypt(data)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(key.encrypt(data))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4
