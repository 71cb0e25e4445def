"""A phone, as the server sees it: the phone side of the ROBERT protocol, the one phone of the project.

It uses only the shared protocol primitives (``crypto_backend.protocol``) and standard cryptography,
never server internals. The protocol side (keys, EBIDs, request bodies, answers) is plain synchronous
code; the HTTP side is a thin aiohttp layer on top (imported only when used), so the tests, the
simulator and the benchmarks call the ``async`` methods, while the Locust users (gevent) send the
bodies with their own client: ``register_body()`` then ``register_answered(answer)``, ``status_body()`` then
``status_answered(answer)``, ``report_body(code)``, ``dummy_report_body()``. Typical use::

    async with aiohttp.ClientSession() as http:
        phone = Phone(base_url, server_public_key_spki, clock=clock, http=http)
        await phone.register()                 # ECDH key pair, K_A,mac / K_A,tuples, first bundle
        hello = phone.hello()                  # 16-byte BLE payload for the current epoch
        other.hear(hello, rssi=-60)            # another Phone keeps what it heard
        r = await phone.status()               # r.status == 200, r.body["riskLevel"] ...
        await other.report(code)               # uploads what it heard (PROTOCOL.md 6)
        await phone.dummy_report()             # a fake upload the network cannot tell from a real one
        await phone.unregister()

Every request method returns an :class:`ApiResponse` (status, JSON body or None) and never raises for
an HTTP error status, so tests can check refusals; on success it updates the phone's state (keys,
tuples, timeStart). Protocol times come from ``clock`` (the one clock: pass the server's ManualClock
in tests, or a shifted Clock in simulations).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto_backend import protocol
from robert_common.clock import EPOCH_DURATION, Clock

if TYPE_CHECKING:
    import aiohttp

API_PREFIX = "/api/v6"
HELLO_SIZE = 16
MIN_REPORT_BODY = 1024  # /report bodies are padded to a power of two bytes, at least this
MAX_REPORT_BODY = 32 * 1024 * 1024  # the server's default ROBERT_REPORT_MAX_BODY_BYTES
HELLOS_PER_FAKE_CONTACT = 180  # a dummy's fake contacts: 15 minutes of HELLOs every 5 s each
CODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: Any  # parsed JSON, or None when the body is empty or not JSON
    size: int = 0  # bytes of the answer's body, as received

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class HeardHello:
    """A HELLO as stored by the phone that heard it (PROTOCOL.md 4)."""

    ecc: bytes
    ebid: bytes
    time16: int
    mac: bytes
    time_collected: int  # NTP seconds of the hearing phone
    rssi: int


def padded_report(body: dict[str, Any], max_size: int = MAX_REPORT_BODY) -> dict[str, Any]:
    """``body`` with a ``padding`` member ("0"s) that makes its JSON (``json.dumps``, default separators:
    what aiohttp and requests send) exactly a power of two bytes long, at least :data:`MIN_REPORT_BODY`,
    at most ``max_size`` (README, "Privacy on the wire")."""
    padded = {**body, "padding": ""}
    size = len(json.dumps(padded))
    target = min(max(MIN_REPORT_BODY, 1 << (size - 1).bit_length()), max_size)
    padded["padding"] = "0" * max(0, target - size)
    return padded


def parse_hello(hello: bytes) -> tuple[bytes, bytes, int, bytes]:
    """``ECC(1) | EBID(8) | Time(2) | MAC(5)`` -> (ecc, ebid, time16, mac)."""
    if len(hello) != HELLO_SIZE:
        raise ValueError("a HELLO is 16 bytes")
    return hello[0:1], hello[1:9], int.from_bytes(hello[9:11], "big"), hello[11:16]


@dataclass
class Phone:
    """One phone. ``server_public_key`` is the registration public key apps embed (SPKI DER);
    ``base_url`` is needed only by the HTTP methods."""

    base_url: str = ""
    server_public_key: bytes = b""
    clock: Clock = field(default_factory=Clock)
    http: aiohttp.ClientSession | None = None
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    k_mac: bytes | None = None
    k_tuples: bytes | None = None
    time_start: int | None = None  # NTP seconds, from /register
    tuples: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # epochId -> (ebid, ecc)
    heard: list[HeardHello] = field(default_factory=list)
    last_status: dict[str, Any] | None = None

    # --- local protocol operations -------------------------------------------------------------

    @property
    def public_key_spki(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def registered(self) -> bool:
        return self.k_mac is not None

    def ntp_now(self) -> int:
        return self.clock.ntp_now()

    def epoch_now(self) -> int:
        if self.time_start is None:
            raise RuntimeError("not registered")
        return (self.ntp_now() - self.time_start) // EPOCH_DURATION

    def epoch_start(self, epoch_id: int) -> int:
        """NTP seconds at which ``epoch_id`` starts (PROTOCOL.md 1), from the registration's timeStart."""
        if self.time_start is None:
            raise RuntimeError("not registered")
        return self.time_start + epoch_id * EPOCH_DURATION

    def derive_keys(self) -> None:
        """K_A,mac and K_A,tuples from ECDH(phone private, server public) (PROTOCOL.md 2)."""
        self.k_mac, self.k_tuples = protocol.derive_client_keys(self.private_key, self.server_public_key)

    def open_bundle(self, sealed: bytes) -> dict[int, tuple[bytes, bytes]]:
        """Decrypt a sealed bundle, merge its tuples into ``self.tuples`` and return them in the
        bundle's order (PROTOCOL.md 3)."""
        if self.k_tuples is None:
            raise RuntimeError("no K_A,tuples: derive the keys first")
        plain = protocol.open_tuples(self.k_tuples, sealed)
        opened = {
            t["epochId"]: (base64.b64decode(t["key"]["ebid"]), base64.b64decode(t["key"]["ecc"]))
            for t in json.loads(plain)
        }
        self.tuples.update(opened)
        return opened

    def key_of(self, epoch_id: int | None = None) -> tuple[int, bytes, bytes]:
        """(epochId, EBID, ECC) of an epoch (default: now); KeyError if no tuple covers it."""
        epoch_id = self.epoch_now() if epoch_id is None else epoch_id
        ebid, ecc = self.tuples[epoch_id]
        return epoch_id, ebid, ecc

    def hello(self, ntp_time: int | None = None) -> bytes:
        """The 16-byte HELLO broadcast at ``ntp_time`` (default now) (PROTOCOL.md 4)."""
        assert self.k_mac is not None and self.time_start is not None
        ntp_time = self.ntp_now() if ntp_time is None else ntp_time
        _, ebid, ecc = self.key_of((ntp_time - self.time_start) // EPOCH_DURATION)
        time16 = (ntp_time & 0xFFFF).to_bytes(2, "big")
        return ecc + ebid + time16 + protocol.hello_mac(self.k_mac, ecc, ebid, time16)

    def hear(self, hello: bytes, rssi: int, time_collected: int | None = None) -> None:
        """Keep a HELLO heard over BLE, with this phone's own time of collection."""
        ecc, ebid, time16, mac = parse_hello(hello)
        collected = self.ntp_now() if time_collected is None else time_collected
        self.heard.append(HeardHello(ecc, ebid, time16, mac, collected, rssi))

    def auth_body(
        self, salt: int, epoch_id: int | None = None, ntp_time: int | None = None
    ) -> dict[str, Any]:
        """``{ebid, epochId, time, mac}`` of an authenticated request (PROTOCOL.md 5)."""
        assert self.k_mac is not None
        epoch_id, ebid, _ = self.key_of(epoch_id)
        time32 = ((self.ntp_now() if ntp_time is None else ntp_time) & 0xFFFFFFFF).to_bytes(4, "big")
        mac = protocol.request_mac(self.k_mac, salt, ebid, epoch_id, time32)
        return {"ebid": b64(ebid), "epochId": epoch_id, "time": b64(time32), "mac": b64(mac)}

    def forget_tuples_before(self, epoch_id: int) -> None:
        """Drop the tuples of epochs before ``epoch_id`` (long-running load phones keep memory flat)."""
        for old in [e for e in self.tuples if e < epoch_id]:
            del self.tuples[old]

    def contacts(self) -> list[dict[str, Any]]:
        """The heard HELLOs grouped by (EBID, ECC), as the /report body's ``contacts`` (PROTOCOL.md 6)."""
        groups: dict[tuple[bytes, bytes], list[HeardHello]] = defaultdict(list)
        for h in self.heard:
            groups[(h.ebid, h.ecc)].append(h)
        return [
            {
                "ebid": b64(ebid),
                "ecc": b64(ecc),
                "ids": [
                    {
                        "timeCollectedOnDevice": h.time_collected,
                        "timeFromHelloMessage": h.time16,
                        "mac": b64(h.mac),
                        "rssiCalibrated": h.rssi,
                    }
                    for h in hellos
                ],
            }
            for (ebid, ecc), hellos in groups.items()
        ]

    # --- request bodies and answers (any transport) ---------------------------------------------

    def register_body(
        self, captcha: str = "-", captcha_id: str = "-", push_info: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The ``POST /register`` body (PROTOCOL.md 2)."""
        body: dict[str, Any] = {
            "captcha": captcha,
            "captchaId": captcha_id,
            "clientPublicECDHKey": b64(self.public_key_spki),
        }
        if push_info is not None:
            body["pushInfo"] = push_info
        return body

    def register_answered(self, answer: dict[str, Any]) -> None:
        """After a 201 to /register: derive the keys, keep timeStart, open the first bundle."""
        self.derive_keys()
        self.time_start = int(answer["timeStart"])
        self.open_bundle(base64.b64decode(answer["tuples"]))

    def status_body(self, push_info: dict[str, str] | None = None, **auth: Any) -> dict[str, Any]:
        """The ``POST /status`` body (salt 0x02). ``auth``: epoch_id, ntp_time."""
        body = self.auth_body(protocol.SALT_STATUS, **auth)
        if push_info is not None:
            body["pushInfo"] = push_info
        return body

    def status_answered(self, answer: dict[str, Any]) -> None:
        """After a 200 to /status: keep the answer, open the fresh bundle."""
        self.last_status = answer
        self.open_bundle(base64.b64decode(answer["tuples"]))

    def report_body(self, code: str) -> dict[str, Any]:
        """The ``POST /report`` body: every heard HELLO, unlocked by a code (PROTOCOL.md 6 and 7), marked
        ``"dummy": false`` and padded like a dummy's."""
        return padded_report({"token": code, "contacts": self.contacts(), "dummy": False})

    def dummy_report_body(self, hellos: int | None = None) -> dict[str, Any]:
        """A fake upload (``"dummy": true``): a random short code and ``hellos`` random HELLOs (default:
        as many as this phone has heard, i.e. what its real upload would carry now), in fake contacts of
        up to :data:`HELLOS_PER_FAKE_CONTACT`, padded like a real body."""
        count = len(self.heard) if hellos is None else hellos
        now = self.ntp_now()
        contacts = []
        for first in range(0, count, HELLOS_PER_FAKE_CONTACT):
            ids = [
                {
                    "timeCollectedOnDevice": now - 60 * (first + i),
                    "timeFromHelloMessage": (now - 60 * (first + i)) & 0xFFFF,
                    "mac": b64(os.urandom(5)),
                    "rssiCalibrated": -40 - secrets.randbelow(50),
                }
                for i in range(min(HELLOS_PER_FAKE_CONTACT, count - first))
            ]
            contacts.append({"ebid": b64(os.urandom(8)), "ecc": b64(os.urandom(1)), "ids": ids})
        code = "".join(secrets.choice(CODE_CHARS) for _ in range(6))
        return padded_report({"token": code, "contacts": contacts, "dummy": True})

    # --- HTTP (aiohttp) --------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> ApiResponse:
        """One request to ``/api/v6<path>``; never raises for an HTTP error status."""
        import aiohttp

        own = self.http is None
        http = self.http or aiohttp.ClientSession()
        try:
            async with http.request(method, self.base_url + API_PREFIX + path, json=body, **kwargs) as r:
                raw = await r.read()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                return ApiResponse(r.status, parsed, len(raw))
        finally:
            if own:
                await http.close()

    async def register(
        self, captcha: str = "-", captcha_id: str = "-", push_info: dict[str, str] | None = None
    ) -> ApiResponse:
        """``POST /register``: on 201, derive the keys and open the first bundle."""
        r = await self.call("POST", "/register", self.register_body(captcha, captcha_id, push_info))
        if r.status == 201:
            self.register_answered(r.body)
        return r

    async def status(self, push_info: dict[str, str] | None = None, **auth: Any) -> ApiResponse:
        """``POST /status`` (salt 0x02); on 200 the fresh bundle is opened. ``auth``: epoch_id, ntp_time."""
        r = await self.call("POST", "/status", self.status_body(push_info, **auth))
        if r.status == 200:
            self.status_answered(r.body)
        return r

    async def unregister(self, **auth: Any) -> ApiResponse:
        """``POST /unregister`` (salt 0x03)."""
        return await self.call("POST", "/unregister", self.auth_body(protocol.SALT_UNREGISTER, **auth))

    async def delete_history(self, **auth: Any) -> ApiResponse:
        """``POST /deleteExposureHistory`` (salt 0x04)."""
        body = self.auth_body(protocol.SALT_DELETE_HISTORY, **auth)
        return await self.call("POST", "/deleteExposureHistory", body)

    async def report(self, code: str) -> ApiResponse:
        """``POST /report`` with every heard HELLO, unlocked by a code (PROTOCOL.md 6 and 7)."""
        return await self.call("POST", "/report", self.report_body(code))

    async def dummy_report(self, hellos: int | None = None) -> ApiResponse:
        """A dummy ``POST /report`` (see :meth:`dummy_report_body`): the server stores nothing and answers
        as it answers a real upload."""
        return await self.call("POST", "/report", self.dummy_report_body(hellos))

    async def clock_info(self) -> ApiResponse:
        return await self.call("GET", "/clock")
