"""Which implementation runs the protocol's kernels: the native extension or the pure-Python reference.

A :class:`Backend` is the table of kernels the protocol operations call: the SKINNY-64-192 key (with its
round tweakeys, cached per backend), HMAC-SHA256 of short messages, the fused HELLO MAC checks, the AES input
padding of the ECCs and the tuples JSON formatter. Two exist:

- :data:`NATIVE_BACKEND`: ``_skinny.c`` (SSSE3 SKINNY, SHA-NI HMAC when the CPU has them); ``None`` when the
  extension is not built.
- :data:`PURE_BACKEND`: the reference cipher (``skinny.py``) and standard-library code (``_pure.py``).

Every operation uses the *active* backend: :data:`DEFAULT` (native when built) unless a caller selects
another one with :func:`use_backend`, which swaps everything, the cached SKINNY keys included. The active
backend's kernels are bound as attributes of this module (``backend.hello_mac``, ``backend.key``...). The
selection is process-wide: it is meant for tests and benchmarks, not for switching per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Protocol

from crypto_backend.protocol import _pure
from crypto_backend.protocol import skinny as _reference
from crypto_backend.protocol._checks import check_bytes
from crypto_backend.protocol.constants import K_S_SIZE

try:
    from crypto_backend.protocol import _skinny as _native
except ImportError:  # extension not built: the pure backend keeps everything working, slowly
    _native = None  # type: ignore[assignment]


class SkinnyKeyLike(Protocol):
    """A SKINNY-64-192 key with its round tweakeys: bulk operations over packed 8-byte blocks."""

    def encrypt(self, blocks: bytes, /) -> bytes: ...
    def decrypt(self, blocks: bytes, /) -> bytes: ...
    def encrypt_epochs(self, first_epoch: int, count: int, id_a: bytes, /) -> bytes: ...


HmacSha256 = Callable[[bytes, bytes], bytes]
HelloMac = Callable[[bytes, bytes, bytes, bytes], bytes]
VerifyHelloMac = Callable[[bytes, bytes, bytes, bytes, bytes], bool]
VerifyHelloMacs = Callable[[bytes, bytes, Sequence[bytes | int], Sequence[bytes]], list[bool]]
Pad16 = Callable[[bytes], bytes]
TuplesJson = Callable[[int, bytes, bytes], bytes]


class Backend:
    """One implementation of the kernels (signatures and contract: ``_skinny.pyi``).

    ``key(k_s)`` is this backend's SKINNY key of one ``K_S``, its round tweakeys computed once (LRU cache of
    64 keys, one cache per backend, so a key of one backend is never used by the other).
    """

    __slots__ = (
        "name",
        "Key",
        "key",
        "hmac_sha256",
        "hello_mac",
        "verify_hello_mac",
        "verify_hello_macs",
        "pad16",
        "tuples_json",
    )

    def __init__(
        self,
        name: str,
        *,
        Key: Callable[[bytes], SkinnyKeyLike],  # noqa: N803 - the class of the key, as the modules name it
        hmac_sha256: HmacSha256,
        hello_mac: HelloMac,
        verify_hello_mac: VerifyHelloMac,
        verify_hello_macs: VerifyHelloMacs,
        pad16: Pad16,
        tuples_json: TuplesJson,
    ) -> None:
        self.name = name
        self.Key = Key
        self.key: Callable[[bytes], SkinnyKeyLike] = lru_cache(maxsize=64)(Key)
        self.hmac_sha256 = hmac_sha256
        self.hello_mac = hello_mac
        self.verify_hello_mac = verify_hello_mac
        self.verify_hello_macs = verify_hello_macs
        self.pad16 = pad16
        self.tuples_json = tuples_json

    def __repr__(self) -> str:
        return f"<protocol backend {self.name}>"


PURE_BACKEND = Backend(
    "pure",
    Key=_reference.Key,
    hmac_sha256=_pure.hmac_sha256,
    hello_mac=_pure.hello_mac,
    verify_hello_mac=_pure.verify_hello_mac,
    verify_hello_macs=_pure.verify_hello_macs,
    pad16=_pure.pad16,
    tuples_json=_pure.tuples_json,
)

NATIVE_BACKEND: Backend | None = (
    Backend(
        "native",
        Key=_native.Key,
        hmac_sha256=_native.hmac_sha256,
        hello_mac=_native.hello_mac,
        verify_hello_mac=_native.verify_hello_mac,
        verify_hello_macs=_native.verify_hello_macs,
        pad16=_native.pad16,
        tuples_json=_native.tuples_json,
    )
    if _native is not None and hasattr(_native, "Key")
    else None
)

NATIVE = NATIVE_BACKEND is not None  # the extension is built: the default backend is the native one
DEFAULT: Backend = NATIVE_BACKEND or PURE_BACKEND
SkinnyKey: Callable[[bytes], SkinnyKeyLike] = DEFAULT.Key  # the SKINNY key class of the default backend

# The active backend and its kernels, bound as attributes of this module: the operations call e.g.
# ``backend.hello_mac(...)``, which CPython 3.11 looks up as fast as a function of the extension module
# itself (an attribute of a Backend instance costs 10 to 40 ns more per call on the hot paths).
# use_backend() rebinds them all at once; nothing else assigns them.
active: Backend
key: Callable[[bytes], SkinnyKeyLike]
hmac_sha256: HmacSha256
hello_mac: HelloMac
verify_hello_mac: VerifyHelloMac
verify_hello_macs: VerifyHelloMacs
pad16: Pad16
tuples_json: TuplesJson


def _activate(backend: Backend) -> None:
    global active, key, hmac_sha256, hello_mac, verify_hello_mac, verify_hello_macs, pad16, tuples_json
    active, key, hmac_sha256 = backend, backend.key, backend.hmac_sha256
    hello_mac, verify_hello_mac, verify_hello_macs = (
        backend.hello_mac,
        backend.verify_hello_mac,
        backend.verify_hello_macs,
    )
    pad16, tuples_json = backend.pad16, backend.tuples_json


_activate(DEFAULT)


def active_backend() -> Backend:
    """The backend the operations use now."""
    return active


@contextmanager
def use_backend(backend: Backend) -> Iterator[Backend]:
    """Run the protocol operations on ``backend`` inside the ``with`` block (process-wide), then restore."""
    if not isinstance(backend, Backend):
        raise TypeError("backend must be a protocol Backend")
    previous = active
    _activate(backend)
    try:
        yield backend
    finally:
        _activate(previous)


def skinny_key(k_s: bytes) -> SkinnyKeyLike:
    """The SKINNY-64-192 key of one day (``K_S``, section 3) on the active backend, computed once (cached)."""
    return key(check_bytes(k_s, K_S_SIZE, "K_S"))
