"""The backend is an explicit object: selecting the pure one really runs the reference cipher and the pure
kernels (its own cached SKINNY keys included), and without the extension the pure one is the default."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from crypto_backend import protocol as p
from crypto_backend.protocol import _skinny as native
from crypto_backend.protocol import backend as backend_module
from crypto_backend.protocol import skinny as reference
from tests.crypto_backend.vectors import protocol_cases

C = protocol_cases()[0]
FIRST = 50 * 96  # a whole day first: 4 days = 384 tuples
DAYS = {d: bytes([d % 256, 3]) * 12 for d in range(50, 54)}

KERNELS = ("key", "hmac_sha256", "hello_mac", "verify_hello_mac", "verify_hello_macs", "pad16", "tuples_json")


def counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Count the calls of ``module.name`` (the calls still happen)."""
    calls = [0]
    original: Callable = getattr(module, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def native_kernels_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel of the native backend raises if called, the ones bound as active included."""
    assert p.NATIVE_BACKEND is not None and p.active_backend() is p.NATIVE_BACKEND

    def refuse(*args: object) -> object:
        raise AssertionError("the native backend was used")

    for name in KERNELS:
        monkeypatch.setattr(p.NATIVE_BACKEND, name, refuse)
        monkeypatch.setattr(backend_module, name, refuse)


def test_the_default_backend_is_the_native_one() -> None:
    assert p.NATIVE and p.NATIVE_BACKEND is not None
    assert p.DEFAULT is p.NATIVE_BACKEND is p.active_backend()
    assert p.NATIVE_BACKEND.Key is native.Key and p.PURE_BACKEND.Key is reference.Key


def test_the_pure_backend_runs_the_reference_cipher_on_the_bundle_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: the pure fallback used to reuse the native SKINNY keys cached for the same K_S."""
    expected = p.seal_bundle(C.k_tuples, DAYS, C.k_g, C.id_a, FIRST, 4, 0x21)  # caches native keys of DAYS
    built = p.build_bundle(DAYS, C.k_g, C.id_a, FIRST, 4, 0x21)
    blocks = counting(monkeypatch, reference, "encrypt_block")
    schedules = counting(monkeypatch, reference, "round_tweakeys")
    native_kernels_unavailable(monkeypatch)
    with p.use_backend(p.PURE_BACKEND):
        assert p.build_bundle(DAYS, C.k_g, C.id_a, FIRST, 4, 0x21) == built
        assert (
            p.open_tuples(C.k_tuples, p.seal_bundle(C.k_tuples, DAYS, C.k_g, C.id_a, FIRST, 4, 0x21)) == built
        )
    assert p.open_tuples(C.k_tuples, expected) == built
    assert blocks[0] == 2 * 384  # every EBID of both bundles by the reference cipher
    assert schedules[0] == 4  # one key schedule per day key, computed by the pure backend, then cached


def test_use_backend_binds_every_kernel_of_the_backend() -> None:
    assert p.NATIVE_BACKEND is not None
    for backend in (p.PURE_BACKEND, p.NATIVE_BACKEND):
        with p.use_backend(backend):
            assert [getattr(backend_module, name) for name in KERNELS] == [
                getattr(backend, name) for name in KERNELS
            ]
    assert [getattr(backend_module, name) for name in KERNELS] == [
        getattr(p.DEFAULT, name) for name in KERNELS
    ]


def test_each_backend_has_its_own_cached_keys() -> None:
    k_s = bytes(range(24))
    native_key = p.skinny_key(k_s)
    with p.use_backend(p.PURE_BACKEND):
        pure_key = p.skinny_key(k_s)
        assert p.skinny_key(k_s) is pure_key
    assert isinstance(native_key, native.Key) and isinstance(pure_key, reference.Key)
    assert p.skinny_key(k_s) is native_key
    assert pure_key.encrypt(bytes(8)) == native_key.encrypt(bytes(8))


def test_the_pure_backend_serves_every_operation_without_the_extension(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = protocol_cases()[1]
    native_kernels_unavailable(monkeypatch)
    with p.use_backend(p.PURE_BACKEND):
        assert p.encrypt_ebid(c.k_s, c.epoch_id, c.id_a) == c.ebid
        assert p.decrypt_ebids_packed(c.k_s, c.ebid)[3:] == c.id_a
        assert p.encrypt_country_code(c.k_g, c.ebid, c.country_code) == c.ecc
        assert p.verify_hello_mac(c.k_mac, c.ecc, c.ebid, c.hello_time16, c.hello_mac)
        assert p.verify_hello_macs(c.k_mac, c.ecc, c.ebid, [c.hello_time16], [c.hello_mac]) == [True]
        mac = c.request_macs["status"]
        assert p.request_mac(c.k_mac, p.SALT_STATUS, c.ebid, c.epoch_id, c.request_time32) == mac
        assert p.tuples_json(c.epoch_id, c.ebid, c.ecc) == c.tuples_plaintext


def test_use_backend_restores_the_previous_one_even_on_error() -> None:
    with pytest.raises(RuntimeError), p.use_backend(p.PURE_BACKEND):
        assert p.active_backend() is p.PURE_BACKEND
        raise RuntimeError("boom")
    assert p.active_backend() is p.DEFAULT
    with p.use_backend(p.PURE_BACKEND), p.use_backend(p.DEFAULT):
        assert p.active_backend() is p.DEFAULT
    with pytest.raises(TypeError):
        p.use_backend("pure").__enter__()  # type: ignore[arg-type]
    assert p.active_backend() is p.DEFAULT


WITHOUT_EXTENSION = """
import sys
sys.modules["crypto_backend.protocol._skinny"] = None  # as if the extension were not built
from crypto_backend import protocol as p
days = {d: bytes([d % 256, 3]) * 12 for d in range(50, 54)}
print(p.NATIVE, p.NATIVE_BACKEND, p.DEFAULT.name, p.SkinnyKey.__module__)
print(p.build_bundle(days, bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), 50 * 96, 4, 0x21).hex())
"""


def test_without_the_extension_the_pure_backend_is_the_default() -> None:
    out = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTENSION, C.k_g.hex(), C.id_a.hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert out[0] == "False None pure crypto_backend.protocol.skinny"
    assert bytes.fromhex(out[1]) == p.build_bundle(DAYS, C.k_g, C.id_a, FIRST, 4, 0x21)
