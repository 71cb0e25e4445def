"""Loader of the shared test vectors (tests/vectors/, see its README): decoded into bytes, one object each."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

VECTORS_DIR = Path(__file__).resolve().parents[1] / "vectors"


@dataclass(frozen=True)
class SkinnyVector:
    key: bytes
    plaintext: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class ProtocolCase:
    k_s: bytes
    k_g: bytes
    country_code: int
    epoch_id: int
    id_a: bytes
    ebid: bytes
    ecc: bytes
    server_private_pkcs8: bytes
    client_public_spki: bytes
    shared_secret: bytes
    k_mac: bytes
    k_tuples: bytes
    hello_time16: bytes
    hello_mac: bytes
    request_time32: bytes
    request_macs: dict[str, bytes]  # status, unregister, deleteExposureHistory
    tuples_plaintext: bytes
    tuples_sealed: bytes


def _load(name: str) -> dict:
    return json.loads((VECTORS_DIR / name).read_text())


@cache
def skinny_vectors() -> tuple[SkinnyVector, ...]:
    """tests/vectors/skinny64_192.json: the first one is the SKINNY paper's."""
    return tuple(
        SkinnyVector(bytes.fromhex(v["key"]), bytes.fromhex(v["plaintext"]), bytes.fromhex(v["ciphertext"]))
        for v in _load("skinny64_192.json")["vectors"]
    )


@cache
def protocol_cases() -> tuple[ProtocolCase, ...]:
    """tests/vectors/robert_protocol.json: hex fields decoded with fromhex, base64 ones with b64decode."""
    h, b = bytes.fromhex, base64.b64decode
    return tuple(
        ProtocolCase(
            k_s=h(c["server_key_ks"]),
            k_g=h(c["federation_key_kg"]),
            country_code=c["country_code"],
            epoch_id=c["epoch_id"],
            id_a=h(c["id_a"]),
            ebid=b(c["ebid"]),
            ecc=b(c["ecc"]),
            server_private_pkcs8=b(c["server_ecdh_private_pkcs8"]),
            client_public_spki=b(c["client_public_spki"]),
            shared_secret=h(c["shared_secret"]),
            k_mac=h(c["key_for_mac"]),
            k_tuples=h(c["key_for_tuples"]),
            hello_time16=h(c["hello_time16"]),
            hello_mac=b(c["hello_mac"]),
            request_time32=b(c["request_time32"]),
            request_macs={name: b(mac) for name, mac in c["request_macs"].items()},
            tuples_plaintext=c["tuples_plaintext"].encode(),
            tuples_sealed=b(c["tuples_sealed"]),
        )
        for c in _load("robert_protocol.json")["cases"]
    )
