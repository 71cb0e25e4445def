"""A small synchronous phone for Locust users: the phone side of the protocol, no asyncio.

Locust runs on gevent, so the users must not import the asyncio server code (or simulator/phone.py,
which is aiohttp): this module holds only what a phone computes (PROTOCOL.md 2 to 6) on top of
``crypto_backend.protocol``, and leaves the HTTP to Locust's own client. Inputs come from environment
variables, documented in loadtests/README.md.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import random
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto_backend import protocol

NTP_OFFSET = 2_208_988_800  # PROTOCOL.md 1
EPOCH_DURATION = 900
API = "/api/v6"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- inputs shared by every user of a process -----------------------------------------------------


def env_float(name: str, default: float) -> float:
    text = os.environ.get(name)
    try:
        return float(text) if text else default
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {text!r}") from None


def load_server_key() -> bytes:
    """The registration public key (SPKI DER): ROBERT_LOAD_SERVER_KEY (a file or base64), or asked of the
    crypto service at ROBERT_CRYPTO_ADDRESS through ``robert-sim key``."""
    value = os.environ.get("ROBERT_LOAD_SERVER_KEY", "").strip()
    if not value:
        cmd = [sys.executable, "-m", "simulator.cli", "key"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise SystemExit(f"cannot get the server key ({shlex.join(cmd)}): {done.stderr.strip()[:200]}")
        value = done.stdout.strip()
    path = Path(value)
    raw = path.read_bytes() if len(value) < 4096 and path.is_file() else value.encode()
    if raw.lstrip().startswith(b"-----"):
        key = serialization.load_pem_public_key(raw)
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except ValueError:
        return raw  # DER file


class CodePool:
    """Codes that unlock /report, one per line in ROBERT_LOAD_CODES_FILE; each is used once."""

    def __init__(self, path: str | None) -> None:
        self._codes: deque[str] = deque()
        self._lock = threading.Lock()
        if path:
            self._codes.extend(line.strip() for line in Path(path).read_text().splitlines() if line.strip())

    def take(self) -> str | None:
        with self._lock:
            return self._codes.popleft() if self._codes else None

    def __len__(self) -> int:
        return len(self._codes)


class ServerClock:
    """Phones keep their clock in sync with the server (GET /clock): an offset on local time."""

    offset: float | None = None
    _lock = threading.Lock()

    @classmethod
    def sync(cls, clock_body: dict[str, Any]) -> None:
        with cls._lock:
            if cls.offset is None:
                server = dt.datetime.fromisoformat(clock_body["time"].replace("Z", "+00:00")).timestamp()
                cls.offset = server - time.time()

    @classmethod
    def ntp_now(cls) -> int:
        return int(time.time() + (cls.offset or 0.0)) + NTP_OFFSET


# --- one phone -----------------------------------------------------------------------------------


class LoadPhone:
    """Keys, bundle and requests of one phone; the caller sends the bodies with Locust's client."""

    def __init__(self, server_key: bytes) -> None:
        self.server_key = server_key
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.k_mac = b""
        self.k_tuples = b""
        self.time_start = 0
        self.tuples: dict[int, tuple[bytes, bytes]] = {}

    def register_body(self) -> dict[str, Any]:
        """``POST /register`` with the captcha off (ROBERT_CAPTCHA=off on the server)."""
        spki = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"captcha": "-", "captchaId": "-", "clientPublicECDHKey": b64(spki)}

    def registered(self, body: dict[str, Any]) -> None:
        """Derive K_A,mac and K_A,tuples (PROTOCOL.md 2) and open the first bundle."""
        self.k_mac, self.k_tuples = protocol.derive_client_keys(self.private_key, self.server_key)
        self.time_start = int(body["timeStart"])
        self.open_bundle(body["tuples"])

    def open_bundle(self, sealed_b64: str) -> None:
        plain = protocol.open_tuples(self.k_tuples, base64.b64decode(sealed_b64))
        for t in orjson.loads(plain):
            self.tuples[t["epochId"]] = (
                base64.b64decode(t["key"]["ebid"]),
                base64.b64decode(t["key"]["ecc"]),
            )
        current = self.epoch(ServerClock.ntp_now())
        for old in [e for e in self.tuples if e < current - 1]:
            del self.tuples[old]

    def epoch(self, ntp: int) -> int:
        return (ntp - self.time_start) // EPOCH_DURATION

    def status_body(self) -> dict[str, Any]:
        """``POST /status`` with the EBID of the current epoch and its MAC (PROTOCOL.md 5)."""
        ntp = ServerClock.ntp_now()
        epoch = self.epoch(ntp)
        ebid, _ = self.tuples[epoch]
        mac = protocol.request_mac(self.k_mac, protocol.SALT_STATUS, ebid, epoch, ntp & 0xFFFFFFFF)
        return {
            "ebid": b64(ebid),
            "epochId": epoch,
            "time": b64((ntp & 0xFFFFFFFF).to_bytes(4, "big")),
            "mac": b64(mac),
        }

    def hellos(self, ntp_start: int, count: int, interval: int = 5) -> dict[str, Any]:
        """One Contact as another phone heard it: ``count`` HELLOs from ``ntp_start`` (PROTOCOL.md 4, 6)."""
        epoch = self.epoch(ntp_start)
        ebid, ecc = self.tuples[epoch]
        ids = []
        for i in range(count):
            t = ntp_start + i * interval
            mac = protocol.hello_mac(self.k_mac, ecc, ebid, t & 0xFFFF)
            ids.append(
                {"timeCollectedOnDevice": t, "timeFromHelloMessage": t & 0xFFFF, "mac": b64(mac),
                 "rssiCalibrated": random.randint(-80, -45)}
            )  # fmt: skip
        return {"ebid": b64(ebid), "ecc": b64(ecc), "ids": ids}


class Neighbourhood:
    """Phones registered by this process, whose HELLOs reporting phones say they heard."""

    def __init__(self, size: int = 2000) -> None:
        self.phones: deque[LoadPhone] = deque(maxlen=size)

    def add(self, phone: LoadPhone) -> None:
        self.phones.append(phone)

    def contacts(self, count: int, hellos: int) -> list[dict[str, Any]]:
        """``count`` Contacts of ``hellos`` HELLOs each, in the epoch that started before now."""
        pool = list(self.phones)
        if not pool:
            return []
        now = ServerClock.ntp_now()
        out = []
        for phone in random.sample(pool, min(count, len(pool))):
            epoch = phone.epoch(now)
            if epoch not in phone.tuples:
                continue
            epoch_start = phone.time_start + epoch * EPOCH_DURATION
            span = max(1, min(now - epoch_start - 5 * hellos, 600))
            out.append(phone.hellos(epoch_start + random.randrange(span), hellos))
        return out
