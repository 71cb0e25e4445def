"""Locust load profiles for the phone API (see loadtests/README.md for the commands).

User classes (pick some on the command line; all three together are the national mix):

- ``PollingPhone`` (weight 95): registers once, then calls ``/status`` every ROBERT_LOAD_POLL_GAP seconds
  (default 1800: the allowed gap of 2 epochs) plus up to 25 % think time, like an installed app.
- ``RegisteringPhone`` (weight 4): a new install every ROBERT_LOAD_REGISTER_WAIT seconds (default: the
  poll gap), each with its own key pair; the bundle is opened to check it.
- ``ReportingPhone`` (weight 1): registers, then uploads ``ROBERT_LOAD_CONTACTS`` contacts of
  ``ROBERT_LOAD_HELLOS`` HELLOs (HELLOs of phones this process registered, so matching finds them),
  unlocked by a code from ROBERT_LOAD_CODES_FILE; then it is a new phone again.

With every user at the same think time, the weights are the request mix: 95 % polls, 4 % registrations,
1 % reports, roughly a national deployment (PROTOCOL.md 10). The server must run with ROBERT_CAPTCHA=off;
for short test runs also ROBERT_STATUS_MIN_EPOCH_GAP=0 and a small ROBERT_LOAD_POLL_GAP.
"""

from __future__ import annotations

import logging
import os
import random

from locust import FastHttpUser, events, task
from locust.exception import StopUser
from robert_load import (
    API,
    CodePool,
    Neighbourhood,
    ServerClock,
    env_float,
    keep_recent_tuples,
    load_server_key,
    new_phone,
)

from simulator.phone import Phone

log = logging.getLogger("robert.load")

POLL_GAP = env_float("ROBERT_LOAD_POLL_GAP", 1800.0)
REGISTER_WAIT = env_float("ROBERT_LOAD_REGISTER_WAIT", POLL_GAP)
REPORT_WAIT = env_float("ROBERT_LOAD_REPORT_WAIT", POLL_GAP)
CONTACTS = int(env_float("ROBERT_LOAD_CONTACTS", 10))
HELLOS = int(env_float("ROBERT_LOAD_HELLOS", 20))
SPREAD_FIRST_POLL = os.environ.get("ROBERT_LOAD_SPREAD", "1") != "0"
# ROBERT_LOAD_WEIGHTS="poll,register,report" overrides the mix (default 95,4,1)
WEIGHTS = [int(w) for w in os.environ.get("ROBERT_LOAD_WEIGHTS", "95,4,1").split(",")]

SERVER_KEY: bytes = b""
CODES = CodePool(None)
NEIGHBOURS = Neighbourhood()


@events.init.add_listener
def _init(environment: object, **_: object) -> None:
    global SERVER_KEY, CODES
    SERVER_KEY = load_server_key()
    CODES = CodePool(os.environ.get("ROBERT_LOAD_CODES_FILE"))


def think(base: float) -> float:
    """Seconds until the next call: the base period plus up to 25 % (people do not poll in step)."""
    return base * random.uniform(1.0, 1.25)


class PhoneUser(FastHttpUser):
    abstract = True

    def sync_clock(self) -> None:
        if ServerClock.offset is None:
            with self.client.get(API + "/clock", name="/clock", catch_response=True) as r:
                if r.status_code == 200:
                    ServerClock.sync(r.json())
                else:
                    r.failure(f"HTTP {r.status_code}")

    def register(self) -> Phone | None:
        """A new install: ``POST /register``, then keys and bundle; None if refused."""
        phone = new_phone(SERVER_KEY)
        with self.client.post(
            API + "/register", json=phone.register_body(), name="/register", catch_response=True
        ) as r:
            if r.status_code != 201:
                r.failure(f"HTTP {r.status_code}")
                return None
            try:
                phone.register_answered(r.json())
            except (KeyError, ValueError) as e:
                r.failure(f"bad registration answer: {type(e).__name__}")
                return None
        NEIGHBOURS.add(phone)
        return phone


class PollingPhone(PhoneUser):
    """An installed app: polls its exposure status at the allowed gap."""

    weight = WEIGHTS[0]

    def wait_time(self) -> float:
        return think(POLL_GAP)

    def on_start(self) -> None:
        self.sync_clock()
        self.phone = self.register()
        if SPREAD_FIRST_POLL:
            self._sleep(random.uniform(0, POLL_GAP))

    def _sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)

    @task
    def status(self) -> None:
        if self.phone is None:  # registration refused: try again as a new install
            self.phone = self.register()
            return
        try:
            body = self.phone.status_body()
        except KeyError:  # bundle exhausted (only if polls stopped for days): a new install
            self.phone = self.register()
            return
        with self.client.post(API + "/status", json=body, name="/status", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
            try:
                self.phone.status_answered(r.json())
                keep_recent_tuples(self.phone)
            except (KeyError, ValueError) as e:
                r.failure(f"bad status answer: {type(e).__name__}")


class RegisteringPhone(PhoneUser):
    """New installs."""

    weight = WEIGHTS[1]

    def wait_time(self) -> float:
        return think(REGISTER_WAIT)

    def on_start(self) -> None:
        self.sync_clock()

    @task
    def install(self) -> None:
        self.register()


class ReportingPhone(PhoneUser):
    """A diagnosed person: registers, then reports what the phone heard with a code."""

    weight = WEIGHTS[2]

    def wait_time(self) -> float:
        return think(REPORT_WAIT)

    def on_start(self) -> None:
        self.sync_clock()

    @task
    def diagnosed(self) -> None:
        phone = self.register()
        if phone is None:
            return
        code = CODES.take()
        if code is None:
            log.warning("no code left in ROBERT_LOAD_CODES_FILE: this reporting user stops")
            raise StopUser()
        NEIGHBOURS.hear_some(phone, CONTACTS, HELLOS)
        body = phone.report_body(code)
        with self.client.post(API + "/report", json=body, name="/report", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
