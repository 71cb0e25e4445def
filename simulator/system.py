"""A throw-away ROBERT system on this machine, one process per component: what the benchmarks, the load
tests and ``robert-sim run`` (with no system flag) start for themselves.

    with LocalSystem(("crypto", "api"), env={"ROBERT_STATUS_MIN_EPOCH_GAP": "0"}) as system:
        key = system.server_public_key()          # what apps embed
        ...  Phone(system.base_url, key) ...
        print(system.cpu_seconds())               # {"crypto": 1.2, "api": 3.4, "database": 2.0}

What it starts, in order, all on 127.0.0.1 with free ports and the data in a temporary folder:

- the database: an embedded SecantusDB, unless ROBERT_MONGODB_URI is set (then fresh database names
  on that server, dropped at the end);
- the internal plane's CA and certificates (as ``robert certs init``: mutual TLS; :meth:`credentials` and
  :meth:`client_settings` give a client in this process its certificate);
- a key store (``robert keys init``, with a random passphrase; auto-rotation on, so shifting the clock
  forward works), only when the crypto service is wanted;
- the chosen components among ``crypto``, ``codes``, ``api``, ``matcher`` (``COMPONENTS``), each as
  ``python -m robert_server.cli ...``, and waits until each answers. ``processes={"api": 2, "crypto": 2}``
  starts several of a component, as ``robert up`` does with ROBERT_API_PROCESSES and
  ROBERT_CRYPTO_PROCESSES: the API processes share the phone port (each its own internal app port), the
  crypto processes each have their own port and the clients spread their calls over them. Processes are
  named ``api``, ``api.2``... (:meth:`pids`, :meth:`cpu_seconds`, :meth:`log`).

Every process gets the same ``ROBERT_*`` environment (``env``): the caller's overrides on top of these
defaults, captcha off, a clock-shift file (``shift_clock()``). ``stop()`` ends the components, then the
database, and removes the folder. Nothing of ``robert_server`` is imported here: the system is driven
through its command line only.

Federated countries (issue 14): ``LocalSystem(country_code=0x22, ...)`` is one country's system, and
``FEDERATION_COMPONENTS`` adds ``federation`` (``robert federation serve``, mutual TLS with a
development certificate from ``robert federation dev-cert``) and ``forwarder`` (``robert federation
forward``). ``LocalFederation`` starts several such systems that partner with each other:

    with LocalFederation({"fr": 0x21, "de": 0x22}) as fed:
        fed.systems["de"].robert("federation", "forward", "--once")
        fed.shift_clock(86_400)                   # one clock-shift file for every country

It makes each country's certificate, points each one's ``ROBERT_FEDERATION_PARTNERS`` at the others'
federation ports and CAs, and shares K_G: exported from the first country's key store right after
``robert keys init``, imported into each other one's before its crypto service starts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

import grpc

from robert_common.clock import write_clock_shift
from robert_common.mongo import EmbeddedMongo, free_port
from robert_common.settings import Settings, load_settings
from robert_common.tls import channel_credentials, ensure_dev_certs

COMPONENTS: dict[str, list[str]] = {
    "crypto": ["crypto"],
    "codes": ["codes", "serve"],
    "api": ["api"],
    "matcher": ["matcher"],
}
ALL = tuple(COMPONENTS)
SCALABLE = ("api", "crypto")  # the components of which several processes may run
# A country's federation processes (``country_code`` and partners needed), started after ``ALL``'s.
FEDERATION: dict[str, list[str]] = {
    "federation": ["federation", "serve"],
    "forwarder": ["federation", "forward"],
}
FEDERATION_COMPONENTS = tuple(FEDERATION)
_TICKS = os.sysconf("SC_CLK_TCK")


def _accepts(address: str) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


class LaunchError(RuntimeError):
    """The system did not start; the message says which component and ends with its log."""


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class LocalSystem:
    """The system as separate processes; a context manager (``start()`` / ``stop()`` otherwise).

    ``components``: which of ``COMPONENTS`` to run. ``env``: ``ROBERT_*`` overrides for every process.
    ``python_options``: interpreter options per component (e.g. ``{"api": ["-m", "cProfile", "-o", f]}``).
    ``past_key_days``: day keys from that many days before today (for contacts built in the past).
    ``processes``: how many processes of a component of ``SCALABLE`` (default 1 each).
    ``country_code``: this system's country (ROBERT_COUNTRY_CODE), needed by ``FEDERATION_COMPONENTS``.
    ``clock_shift_file``: a clock-shift file shared with other systems (default: one in the folder).
    """

    def __init__(
        self,
        components: Iterable[str] = ALL,
        *,
        env: dict[str, str] | None = None,
        python_options: dict[str, list[str]] | None = None,
        past_key_days: int = 0,
        ready_timeout: float = 90.0,
        processes: dict[str, int] | None = None,
        country_code: int | None = None,
        clock_shift_file: Path | None = None,
    ) -> None:
        wanted = tuple(components)
        self.federation_components = tuple(c for c in wanted if c in FEDERATION)
        self.components = tuple(c for c in wanted if c not in FEDERATION)
        unknown = set(self.components) - set(COMPONENTS)
        if unknown:
            raise ValueError(
                f"unknown components: {sorted(unknown)} (known: {', '.join((*COMPONENTS, *FEDERATION))})"
            )
        self.counts = {name: 1 for name in self.components} | dict(processes or {})
        if any(n < 1 or (n > 1 and name not in SCALABLE) for name, n in self.counts.items()):
            raise ValueError(f"process counts: at least 1, more only for {', '.join(SCALABLE)}")
        if self.federation_components and country_code is None:
            raise ValueError("the federation components need a country_code")
        self.country_code = country_code
        self._shift_file = clock_shift_file
        self.partners: list[LocalSystem] = []  # federated countries (partner_with)
        self.federation_key_export: Path | None = None  # K_G written there after `robert keys init`
        self.federation_key_import: Path | None = None  # K_G read from there after `robert keys init`
        self.federation_key_ready: threading.Event | None = None  # set once K_G is exported (or failed)
        self.federation_address = f"127.0.0.1:{free_port()}"
        self.overrides = dict(env or {})
        self.python_options = python_options or {}
        self.past_key_days = past_key_days
        self.ready_timeout = ready_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="robert-system-"))
        self.env: dict[str, str] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.database: EmbeddedMongo | None = None
        self._logs: list[IO[bytes]] = []
        self._databases: list[str] = []
        self.http_port = free_port()
        self.metrics_ports = [free_port() for _ in range(self.counts.get("api", 1))]
        self.metrics_port = self.metrics_ports[0]
        self.crypto_addresses = [f"127.0.0.1:{free_port()}" for _ in range(self.counts.get("crypto", 1))]
        self.crypto_address = self.crypto_addresses[0]
        self.codes_address = f"127.0.0.1:{free_port()}"

    # --- what callers use ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def mongodb_uri(self) -> str:
        return self.env["ROBERT_MONGODB_URI"]

    @property
    def clock_shift_file(self) -> Path:
        return self._shift_file or self.dir / "clock_shift"

    @property
    def federation_pki(self) -> Path:
        """Folder of this country's development CA (``ca.pem``) and certificate (``federation.pem/key``)."""
        return self.dir / "federation-pki"

    def make_dev_cert(self) -> None:
        """``robert federation dev-cert``: this country's development CA and certificate (once)."""
        if self.country_code is None:
            raise ValueError("a federation certificate needs a country_code")
        if not (self.federation_pki / "ca.pem").exists():
            cc = f"0x{self.country_code:02x}"
            self._run_cli(["federation", "dev-cert", "--country", cc, "--dir", str(self.federation_pki)],
                          dict(os.environ))  # fmt: skip

    def partner_with(self, other: LocalSystem) -> None:
        """Deliver ``other``'s contacts to it and accept its own (``ROBERT_FEDERATION_PARTNERS``)."""
        if other.country_code is None or other.country_code == self.country_code:
            raise ValueError("a partner is another country (its own country_code)")
        self.partners.append(other)

    def shift_clock(self, seconds: float) -> None:
        """Move every component's clock to ``seconds`` from real time (re-read within a second)."""
        write_clock_shift(self.clock_shift_file, seconds)

    def robert(self, *args: str, timeout: float = 600) -> str:
        """Run ``robert ARGS`` against this system; its standard output (LaunchError if it fails)."""
        return self._run_cli(list(args), self.env, timeout)

    @staticmethod
    def _run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "robert_server.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise LaunchError(f"robert {' '.join(args[:2])} failed: {done.stderr.strip()[-300:]}")
        return done.stdout

    def server_public_key(self) -> bytes:
        """The registration public key (SPKI DER) apps embed: ``robert keys public``."""
        import base64

        return base64.b64decode(self.robert("keys", "public").strip())

    def issuer_token(self, name: str | None = None) -> str:
        """A new code issuer's bearer token: ``robert issuers add``."""
        name = name or f"issuer-{secrets.token_hex(4)}"
        return self.robert("issuers", "add", name).strip().split()[-1]

    def client_settings(self) -> Settings:
        """Settings for a client of this system's gRPC services in this process (its certificates:
        ``CryptoClient.from_settings(system.client_settings(), "api")``)."""
        return load_settings(
            use_running_embedded=False,
            data_dir=self.dir,
            crypto_address=self.crypto_address,
            codes_address=self.codes_address,
        )

    def credentials(self, name: str) -> grpc.ChannelCredentials:
        """Mutual-TLS credentials of identity ``name`` (e.g. ``issuer-lab``; issued when missing)."""
        if not (self.dir / "tls" / f"{name}.pem").exists():
            self.robert("certs", "issue", name)
        return channel_credentials(self.client_settings(), name)

    def pids(self) -> dict[str, int]:
        """Process id per running component, and ``database`` for the embedded database."""
        out = {name: p.pid for name, p in self.processes.items()}
        if self.database is not None and self.database.proc is not None:
            out["database"] = self.database.proc.pid
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far, per process of :meth:`pids` (those still running)."""
        out = {}
        for name, pid in self.pids().items():
            try:
                out[name] = cpu_seconds(pid)
            except (OSError, ValueError):
                continue
        return out

    def log(self, name: str) -> str:
        """The end of a component's log (standard output and error)."""
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # --- start and stop --------------------------------------------------------------------------

    def start(self) -> LocalSystem:
        try:
            self._start()
            self._start_federation()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        uri = os.environ.get("ROBERT_MONGODB_URI") or self.overrides.get("ROBERT_MONGODB_URI")
        suffix = secrets.token_hex(4)
        names = {
            "ROBERT_MONGODB_DATABASE": f"robert_{suffix}",
            "ROBERT_CRYPTO_MONGODB_DATABASE": f"robert_crypto_{suffix}",
        }
        if uri:  # a shared server: databases of our own, dropped at the end
            self._databases = list(names.values())
        else:
            self.database = EmbeddedMongo(None)
            uri = self.database.start()
        self.env = {
            **os.environ,
            "ROBERT_DATA_DIR": str(self.dir),
            "ROBERT_MONGODB_URI": uri,
            **names,
            "ROBERT_KEYSTORE_PATH": str(self.dir / "keystore.json"),
            "ROBERT_KEYSTORE_PASSPHRASE": secrets.token_urlsafe(24),
            "ROBERT_KEYSTORE_AUTO_ROTATE": "true",
            "ROBERT_CLOCK_SHIFT_FILE": str(self.clock_shift_file),
            "ROBERT_CAPTCHA": "off",
            "ROBERT_LOG_LEVEL": "WARNING",
            "ROBERT_HTTP_HOST": "127.0.0.1",
            "ROBERT_HTTP_PORT": str(self.http_port),
            "ROBERT_METRICS_HOST": "127.0.0.1",
            "ROBERT_METRICS_PORT": str(self.metrics_port),
            "ROBERT_CRYPTO_LISTEN": self.crypto_address,
            "ROBERT_CRYPTO_ADDRESS": ",".join(self.crypto_addresses),
            "ROBERT_API_PROCESSES": str(len(self.metrics_ports)),
            "ROBERT_CODES_LISTEN": self.codes_address,
            "ROBERT_CODES_ADDRESS": self.codes_address,
            **self._federation_env(),
            **self.overrides,
        }
        ensure_dev_certs(self.dir / "tls")  # the internal plane's CA and a certificate per component
        if "crypto" in self.components:
            self._make_keystore()
        for kind in ALL:  # dependencies first: crypto, codes, api, matcher
            if kind in self.components:
                for i in range(self.counts[kind]):
                    name = kind if i == 0 else f"{kind}.{i + 1}"
                    self.processes[name] = self._spawn(name, self._own_env(kind, i))
                    self._wait_ready(name)

    def restart(self, name: str) -> None:
        """Start process ``name`` (``"api"``, ``"crypto.2"``...) again, stopping it first if it runs, and
        wait until it answers (a benchmark or test that stopped a component brings it back)."""
        kind, _, number = name.partition(".")
        old = self.processes.get(name)
        if old is not None and old.poll() is None:
            old.terminate()
            old.wait()
        self.processes[name] = self._spawn(name, self._own_env(kind, int(number or 1) - 1))
        self._wait_ready(name)

    def _own_env(self, kind: str, i: int) -> dict[str, str]:
        """The settings of the i-th process of ``kind`` on top of the common ones: its own ports."""
        if kind == "crypto":
            return {"ROBERT_CRYPTO_LISTEN": self.crypto_addresses[i]}
        if kind == "api":
            return {"ROBERT_METRICS_PORT": str(self.metrics_ports[i])}
        return {}

    def _make_keystore(self) -> None:
        if self.past_key_days:  # keys from N days ago: initialise "then", then rotate up to today
            self.shift_clock(-86_400 * self.past_key_days)
            self.robert("keys", "init")
            self.shift_clock(0)
            self.robert("keys", "rotate")
        else:
            self.robert("keys", "init")
        if self.federation_key_export is not None:
            try:
                self.robert("keys", "export-federation-key", str(self.federation_key_export))
            finally:
                if self.federation_key_ready is not None:
                    self.federation_key_ready.set()
        if self.federation_key_import is not None:
            if self.federation_key_ready is not None:
                self.federation_key_ready.wait(self.ready_timeout)
            self.robert("keys", "import-federation-key", str(self.federation_key_import))

    def _federation_env(self) -> dict[str, str]:
        """This country's settings: its code, and with partners its federation service and certificate."""
        if self.country_code is None:
            return {}
        env = {"ROBERT_COUNTRY_CODE": str(self.country_code)}
        if self.partners:
            self.make_dev_cert()
            partners = [
                {"country_code": p.country_code, "endpoint": p.federation_address,
                 "ca": str(p.federation_pki / "ca.pem")}
                for p in self.partners
            ]  # fmt: skip
            env |= {
                "ROBERT_FEDERATION_LISTEN": self.federation_address,
                "ROBERT_FEDERATION_TLS_CERT": str(self.federation_pki / "federation.pem"),
                "ROBERT_FEDERATION_TLS_KEY": str(self.federation_pki / "federation.key"),
                "ROBERT_FEDERATION_PARTNERS": json.dumps(partners),
            }
        return env

    def _start_federation(self) -> None:
        """``robert federation serve`` / ``forward`` when wanted; serve is ready when its port accepts."""
        for name in FEDERATION_COMPONENTS:
            if name not in self.federation_components:
                continue
            log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed by stop()
            self._logs.append(log)
            cmd = [sys.executable, "-m", "robert_server.cli", *FEDERATION[name]]
            proc = self.processes[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log)
            deadline = time.monotonic() + self.ready_timeout
            while name == "federation" and not _accepts(self.federation_address):
                if proc.poll() is not None:
                    raise LaunchError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
                if time.monotonic() > deadline:
                    raise LaunchError(
                        f"{name} did not answer within {self.ready_timeout:.0f} s:\n{self.log(name)}"
                    )
                time.sleep(0.1)

    def _spawn(self, name: str, own_env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed by stop()
        self._logs.append(log)
        kind = name.split(".")[0]
        cmd = [
            sys.executable,
            *self.python_options.get(kind, []),
            "-m",
            "robert_server.cli",
            *COMPONENTS[kind],
        ]
        return subprocess.Popen(cmd, env=self.env | own_env, stdout=log, stderr=log)

    def _wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        proc = self.processes[name]
        while True:
            if proc.poll() is not None:
                raise LaunchError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            if self._answers(name):
                return
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{name} did not answer within {self.ready_timeout:.0f} s:\n{self.log(name)}"
                )
            time.sleep(0.1)

    def _answers(self, name: str) -> bool:
        kind, _, index = name.partition(".")
        i = int(index or 1) - 1
        if kind == "api" and i > 0:  # the phone port is shared: this process is up when its internal app is
            return _accepts(f"127.0.0.1:{self.metrics_ports[i]}")
        if name == "api":
            try:
                with urllib.request.urlopen(self.base_url + "/api/v6/clock", timeout=2) as r:  # noqa: S310
                    return bool(r.status == 200)
            except OSError:
                return False
        address = {"crypto": self.crypto_addresses[i], "codes": self.codes_address}.get(kind)
        if address is None:  # the matcher serves nothing: running is ready
            return True
        return _accepts(address)

    def stop(self) -> None:
        """Stop the components (SIGTERM, then SIGKILL after 15 s), then the database; remove the folder."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes = {}
        for log in self._logs:
            log.close()
        self._logs = []
        if self._databases:
            self._drop_databases()
        if self.database is not None:
            self.database.stop()
            self.database = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _drop_databases(self) -> None:
        from pymongo import MongoClient

        client: MongoClient = MongoClient(self.mongodb_uri, serverSelectionTimeoutMS=5000)
        try:
            for name in self._databases:
                client.drop_database(name)
        finally:
            client.close()
        self._databases = []

    def __enter__(self) -> LocalSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalFederation:
    """Throw-away systems of several countries that federate with each other; a context manager.

    ``countries``: name -> country code, e.g. ``{"fr": 0x21, "de": 0x22}``. ``components`` and ``env``
    as for :class:`LocalSystem` (``FEDERATION_COMPONENTS`` among them for contacts to cross borders).
    Every system reads one clock-shift file (:meth:`shift_clock`); ``stop()`` stops them all and
    removes the folder.
    """

    def __init__(
        self,
        countries: Mapping[str, int],
        components: Iterable[str] = (*ALL, *FEDERATION_COMPONENTS),
        *,
        env: dict[str, str] | None = None,
        ready_timeout: float = 90.0,
    ) -> None:
        if len(countries) < 2:
            raise ValueError("a federation is two countries or more")
        self.dir = Path(tempfile.mkdtemp(prefix="robert-federation-"))
        components = tuple(components)
        self.systems = {
            name: LocalSystem(components, env=env, ready_timeout=ready_timeout, country_code=cc,
                              clock_shift_file=self.clock_shift_file)
            for name, cc in countries.items()
        }  # fmt: skip
        for system in self.systems.values():
            for other in self.systems.values():
                if other is not system:
                    system.partner_with(other)
        first, *others = self.systems.values()
        first.federation_key_export = self.dir / "federation-key"  # K_G: made in the first country
        ready = threading.Event()
        first.federation_key_ready = ready
        for system in others:
            system.federation_key_import = first.federation_key_export
            system.federation_key_ready = ready

    @property
    def clock_shift_file(self) -> Path:
        return self.dir / "clock_shift"

    def shift_clock(self, seconds: float) -> None:
        """Move every country's clock to ``seconds`` from real time."""
        write_clock_shift(self.clock_shift_file, seconds)

    def start(self) -> LocalFederation:
        try:
            self.shift_clock(0)
            for system in self.systems.values():  # every CA exists before any federation service starts
                system.make_dev_cert()
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_all(self) -> None:
        """Every system at once (each waits only for K_G from the first); the first error is raised."""
        errors: list[BaseException] = []

        def start(system: LocalSystem) -> None:
            try:
                system.start()
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
                errors.append(e)
                if system.federation_key_ready is not None:
                    system.federation_key_ready.set()  # importers must not wait for a dead exporter

        threads = [threading.Thread(target=start, args=(s,), daemon=True) for s in self.systems.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def stop(self) -> None:
        for system in self.systems.values():
            system.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
