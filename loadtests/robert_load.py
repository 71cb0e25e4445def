"""What the Locust users share: inputs, the server's clock, the phones they registered.

The phone is the simulator's (``simulator.phone.Phone``): its protocol side (request bodies, answers,
HELLOs) is synchronous and imports no asyncio code, and the users send its bodies with Locust's own
(gevent) client. Inputs come from environment variables, documented in loadtests/README.md.
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

from cryptography.hazmat.primitives import serialization

from robert_common.clock import EPOCH_DURATION, Clock
from simulator.phone import API_PREFIX as API
from simulator.phone import Phone

__all__ = [
    "API", "CodePool", "Neighbourhood", "SERVER_CLOCK", "ServerClock", "env_float", "keep_recent_tuples",
    "load_server_key", "new_phone",
]  # fmt: skip


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


class ServerClock(Clock):
    """Phones keep their clock in sync with the server (GET /clock): one offset on local time, shared by
    every user of the process (set by the first answer)."""

    offset: float | None = None
    _sync_lock = threading.Lock()

    @classmethod
    def sync(cls, clock_body: dict[str, Any]) -> None:
        with cls._sync_lock:
            if cls.offset is None:
                server = dt.datetime.fromisoformat(clock_body["time"].replace("Z", "+00:00")).timestamp()
                cls.offset = server - time.time()

    def now(self) -> float:
        return time.time() + (ServerClock.offset or 0.0)


SERVER_CLOCK = ServerClock()


def new_phone(server_key: bytes) -> Phone:
    """A new install: the simulator's phone on the server's clock; its HTTP goes through Locust's client."""
    return Phone(server_public_key=server_key, clock=SERVER_CLOCK)


def keep_recent_tuples(phone: Phone) -> None:
    """Drop tuples of epochs before the previous one, so that long runs keep memory flat."""
    phone.forget_tuples_before(phone.epoch_now() - 1)


class Neighbourhood:
    """Phones registered by this process, whose HELLOs reporting phones say they heard."""

    def __init__(self, size: int = 2000) -> None:
        self.phones: deque[Phone] = deque(maxlen=size)

    def add(self, phone: Phone) -> None:
        self.phones.append(phone)

    def hear_some(self, reporter: Phone, count: int, hellos: int, interval: int = 5) -> None:
        """``reporter`` hears ``hellos`` HELLOs (one every ``interval`` s) of each of ``count`` phones of
        the neighbourhood, in the epoch that started before now (PROTOCOL.md 4, 6)."""
        pool = list(self.phones)
        now = SERVER_CLOCK.ntp_now()
        for phone in random.sample(pool, min(count, len(pool))):
            if phone.time_start is None:
                continue
            epoch = phone.epoch_now()
            if epoch not in phone.tuples:
                continue
            epoch_start = phone.time_start + epoch * EPOCH_DURATION
            span = max(1, min(now - epoch_start - interval * hellos, 600))
            start = epoch_start + random.randrange(span)
            for i in range(hellos):
                t = start + i * interval
                reporter.hear(phone.hello(t), rssi=random.randint(-80, -45), time_collected=t)
