"""Bad inputs to the protocol operations: always ProtocolError with a short message, never a crash."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from crypto_backend import protocol as p
from tests.crypto_backend.vectors import protocol_cases

# Every test here runs on both backends (tests/crypto_backend/conftest.py): same errors, same messages.
pytestmark = pytest.mark.usefixtures("protocol_backend")

C = protocol_cases()[0]
SERVER_KEY = serialization.load_der_private_key(C.server_private_pkcs8, None)
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
DER = serialization.Encoding.DER


def _spki(key) -> bytes:
    return key.public_key().public_bytes(DER, SPKI)


def _not_on_curve() -> bytes:
    der = bytearray(C.client_public_spki)
    der[-1] ^= 1  # change y: (x, y') is not on P-256 for this x
    return bytes(der)


BAD_SPKIS = {
    "empty": b"",
    "garbage": b"\x30\x59garbage-not-der" * 3,
    "truncated": C.client_public_spki[:-1],
    "trailing-bytes": C.client_public_spki + b"\x00",
    "point-not-on-curve": _not_on_curve(),
    "p384": _spki(ec.generate_private_key(ec.SECP384R1())),
    "secp256k1": _spki(ec.generate_private_key(ec.SECP256K1())),
    "ed25519": _spki(ed25519.Ed25519PrivateKey.generate()),
    "x25519": _spki(x25519.X25519PrivateKey.generate()),
    "base64-not-decoded": base64.b64encode(C.client_public_spki),
    "raw-point-not-spki": serialization.load_der_public_key(C.client_public_spki).public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    ),
}


@pytest.mark.parametrize("name", list(BAD_SPKIS))
def test_bad_client_public_key(name: str) -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.derive_client_keys(SERVER_KEY, BAD_SPKIS[name])
    assert len(str(err.value)) < 80


@pytest.mark.parametrize("value", [None, "MFkwEwYH", 42])
def test_client_public_key_of_the_wrong_type(value: object) -> None:
    with pytest.raises(p.ProtocolError):
        p.derive_client_keys(SERVER_KEY, value)  # type: ignore[arg-type]


def test_server_key_must_be_p256() -> None:
    with pytest.raises(p.ProtocolError):
        p.derive_client_keys(ec.generate_private_key(ec.SECP384R1()), C.client_public_spki)
    with pytest.raises(p.ProtocolError):
        p.derive_client_keys(None, C.client_public_spki)  # type: ignore[arg-type]


def test_a_compressed_point_is_the_same_key() -> None:
    public = serialization.load_der_public_key(C.client_public_spki)
    point = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    compressed = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point).public_bytes(DER, SPKI)
    assert p.derive_client_keys(SERVER_KEY, compressed) == (C.k_mac, C.k_tuples)


K24, K32, EBID, ECC, ID_A = C.k_s, C.k_g, C.ebid, C.ecc, C.id_a
TIME32 = C.request_time32

BAD_CALLS: dict[str, Callable[[], object]] = {
    "encrypt_ebid short key": lambda: p.encrypt_ebid(K24[:-1], 1, ID_A),
    "encrypt_ebid long id_a": lambda: p.encrypt_ebid(K24, 1, ID_A + b"x"),
    "encrypt_ebid negative epoch": lambda: p.encrypt_ebid(K24, -1, ID_A),
    "encrypt_ebid str epoch": lambda: p.encrypt_ebid(K24, "1", ID_A),  # type: ignore[arg-type]
    "encrypt_ebid str key": lambda: p.encrypt_ebid("k" * 24, 1, ID_A),  # type: ignore[arg-type]
    "decrypt_ebid short ebid": lambda: p.decrypt_ebid(K24, EBID[:-1]),
    "decrypt_ebid none": lambda: p.decrypt_ebid(K24, None),  # type: ignore[arg-type]
    "decrypt_ebid 32-byte key": lambda: p.decrypt_ebid(K32, EBID),
    "encrypt_ebids bad epoch": lambda: p.encrypt_ebids(K24, [1, -5], ID_A),
    "decrypt_ebids one short": lambda: p.decrypt_ebids(K24, [EBID, EBID[:7]]),
    "packed negative count": lambda: p.encrypt_ebids_packed(K24, 1, -1, ID_A),
    "packed ragged": lambda: p.decrypt_ebids_packed(K24, EBID + b"x"),
    "ecc short k_g": lambda: p.encrypt_country_code(K24, EBID, 0x21),
    "ecc cc out of range": lambda: p.encrypt_country_code(K32, EBID, 256),
    "ecc short ebid": lambda: p.country_code(K32, EBID[:4], ECC),
    "ecc two bytes": lambda: p.country_code(K32, EBID, ECC * 2),
    "eccs count mismatch": lambda: p.country_codes(K32, EBID * 2, ECC),
    "hello short key": lambda: p.hello_mac(K24, ECC, EBID, 1),
    "hello 3-byte time": lambda: p.hello_mac(K32, ECC, EBID, b"abc"),
    "hello verify short ebid": lambda: p.verify_hello_mac(K32, ECC, EBID[:7], 1, bytes(5)),
    "hello batch mismatch": lambda: p.verify_hello_macs(K32, ECC, EBID, [1, 2], [bytes(5)]),
    "request unknown salt": lambda: p.request_mac(K32, p.SALT_HELLO, EBID, 1, TIME32),
    "request epoch too big": lambda: p.request_mac(K32, p.SALT_STATUS, EBID, 1 << 32, TIME32),
    "request short time": lambda: p.request_mac(K32, p.SALT_STATUS, EBID, 1, TIME32[:3]),
    "request negative time": lambda: p.request_mac(K32, p.SALT_STATUS, EBID, 1, -1),
    "verify request short ebid": lambda: p.verify_request_mac(K32, 2, EBID[:7], 1, TIME32, bytes(32)),
    "seal short key": lambda: p.seal_tuples(K24, b"[]"),
    "open short key": lambda: p.open_tuples(K24, C.tuples_sealed),
    "open too short": lambda: p.open_tuples(C.k_tuples, bytes(27)),
    "open tampered": lambda: p.open_tuples(
        C.k_tuples, C.tuples_sealed[:-1] + bytes([C.tuples_sealed[-1] ^ 1])
    ),
    "open wrong key": lambda: p.open_tuples(C.k_mac, C.tuples_sealed),
    "open str": lambda: p.open_tuples(C.k_tuples, "sealed"),  # type: ignore[arg-type]
    "json ragged": lambda: p.tuples_json(1, EBID + b"x", ECC),
    "json count mismatch": lambda: p.tuples_json(1, EBID * 2, ECC),
    "bundle zero days": lambda: p.bundle_epochs(1, 0),
    "bundle negative epoch": lambda: p.bundle_epochs(-1, 1),
    "build bad id_a": lambda: p.build_bundle({0: K24}, K32, b"1234", 0, 1, 0x21),
    "build bad day key": lambda: p.build_bundle({0: K32}, K32, ID_A, 0, 1, 0x21),
    "build bad cc": lambda: p.build_bundle({0: K24}, K32, ID_A, 0, 1, -1),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_is_a_protocol_error(name: str) -> None:
    with pytest.raises(p.ProtocolError) as err:
        BAD_CALLS[name]()
    message = str(err.value)
    assert len(message) < 80
    for secret in (K24, K32, EBID, ID_A, C.k_tuples, C.k_mac):
        assert secret.hex() not in message and base64.b64encode(secret).decode() not in message


def test_a_wrong_length_mac_is_simply_invalid() -> None:
    assert not p.verify_hello_mac(C.k_mac, ECC, EBID, C.hello_time16, C.hello_mac + b"x")
    assert not p.verify_hello_mac(C.k_mac, ECC, EBID, C.hello_time16, None)  # type: ignore[arg-type]
    assert p.verify_hello_macs(C.k_mac, ECC, EBID, [C.hello_time16], [C.hello_mac[:4]]) == [False]
    mac = C.request_macs["status"]
    assert not p.verify_request_mac(C.k_mac, p.SALT_STATUS, EBID, C.epoch_id, TIME32, mac[:31])


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(p.ProtocolError, ValueError)
    assert issubclass(p.NoDayKeyError, p.ProtocolError)
