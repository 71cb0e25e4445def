"""Two complete systems on this machine, each a ``robert up`` of its own country, federated.

Each country has its data folder (embedded database, key store), its ports, its federation
certificate; both share K_G (``robert keys export-federation-key`` / ``import-federation-key``) and one
clock-shift file, so the test can move time for both at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from robert_common.clock import write_clock_shift
from robert_common.mongo import free_port
from robert_server.federation.tls import CountryPki, create_country_pki

PASSPHRASE = "two countries test passphrase"  # noqa: S105
NOT_HERE = ("portal", "dev-idp")


class Country:
    """One country's ``robert up``; ``start()`` / ``stop()`` may be called again (same data, ports)."""

    def __init__(self, root: Path, cc: int, shift_file: Path, **extra: str) -> None:
        self.cc = cc
        self.dir = root / f"country-{cc:02x}"
        self.dir.mkdir(parents=True)
        self.pki: CountryPki = create_country_pki(self.dir / "federation-pki", cc)
        self.ports = {
            n: free_port() for n in ("http", "metrics", "crypto", "codes", "federation", "fwd_metrics")
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")},
            "ROBERT_DATA_DIR": str(self.dir / "data"),
            "ROBERT_COUNTRY_CODE": str(cc),
            "ROBERT_KEYSTORE_PASSPHRASE": PASSPHRASE,
            "ROBERT_KEYSTORE_AUTO_ROTATE": "true",
            "ROBERT_CLOCK_SHIFT_FILE": str(shift_file),
            "ROBERT_CAPTCHA": "off",
            # The test drives each country's code issuer and crypto service from outside (robert-sim
            # --country has no per-country certificates yet): its internal plane runs plaintext, which
            # robert up allows on loopback addresses only. test_up*.py cover the mutual-TLS plane.
            "ROBERT_GRPC_PLAINTEXT": "true",
            "ROBERT_STATUS_MIN_EPOCH_GAP": "0",
            "ROBERT_MATCHER_INTERVAL": "0.5",
            "ROBERT_FEDERATION_INTERVAL": "0.5",
            "ROBERT_FEDERATION_BACKOFF_MAX": "2",
            "ROBERT_FEDERATION_TIMEOUT": "5",
            "ROBERT_HTTP_PORT": str(self.ports["http"]),
            "ROBERT_METRICS_PORT": str(self.ports["metrics"]),
            "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{self.ports['crypto']}",
            "ROBERT_CRYPTO_ADDRESS": f"127.0.0.1:{self.ports['crypto']}",
            "ROBERT_CODES_LISTEN": f"127.0.0.1:{self.ports['codes']}",
            "ROBERT_CODES_ADDRESS": f"127.0.0.1:{self.ports['codes']}",
            "ROBERT_FEDERATION_LISTEN": f"127.0.0.1:{self.ports['federation']}",
            "ROBERT_FEDERATION_TLS_CERT": str(self.pki.cert),
            "ROBERT_FEDERATION_TLS_KEY": str(self.pki.key),
            "ROBERT_FEDERATION_FORWARDER_METRICS_PORT": str(self.ports["fwd_metrics"]),
            "ROBERT_LOG_LEVEL": "INFO",
            **extra,
        }

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def federation_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['federation']}"

    def partner_with(self, other: Country, endpoint: str | None = None) -> None:
        partners = json.loads(self.env.get("ROBERT_FEDERATION_PARTNERS", "[]"))
        partners.append({"country_code": other.cc, "endpoint": endpoint or other.federation_endpoint,
                         "ca": str(other.pki.ca)})  # fmt: skip
        self.env["ROBERT_FEDERATION_PARTNERS"] = json.dumps(partners)

    def robert(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "robert_server.cli", *args],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"robert {' '.join(args)}: {done.stderr[-1500:]}"
        return done.stdout

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = (self.dir / log).open("ab")
        try:
            return subprocess.Popen([sys.executable, "-m", "robert_server.cli", *args], env=self.env,
                                    stdout=out, stderr=out, cwd=self.dir)  # fmt: skip
        finally:
            out.close()

    def start(self, *without: str) -> None:
        """``robert up`` (without the ProStopCovid portal, which has no part here)."""
        skipped = (*without, *NOT_HERE)
        args = ["up"] + [a for w in skipped for a in ("--without", w)]
        self.proc = self.spawn(*args, log="up.log")
        deadline = time.monotonic() + 120
        while not (self._healthy() and self._listening(self.ports["federation"])):
            assert self.proc.poll() is None, f"robert up of {self.cc:#x} exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"robert up of {self.cc:#x} did not start:\n{self.log()}"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        code, self.proc = self.proc.returncode, None
        assert code == 0, f"robert up of {self.cc:#x} exited {code}:\n{self.log()}"

    def log(self, name: str = "up.log") -> str:
        path = self.dir / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/health", timeout=2) as r:  # noqa: S310
                return bool(r.status == 200)
        except OSError:
            return False

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def kpis(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.ports['metrics']}/internal/api/v2/kpis"
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310
            return dict(json.loads(r.read()))

    def metric(self, port: int, name: str, **labels: str) -> float:
        """A Prometheus sample of the process serving metrics on ``port`` (0 when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
            text = r.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def issuer_token(self) -> str:
        return self.robert("issuers", "add", f"doctor-{self.cc:02x}").strip().split()[-1]


def federate(root: Path, a_cc: int, b_cc: int, **extra: str) -> tuple[Country, Country, Path]:
    """Two countries that partner with each other and share K_G (made in A, imported in B)."""
    shift = root / "clock_shift"
    write_clock_shift(shift, 0)
    a, b = Country(root, a_cc, shift, **extra), Country(root, b_cc, shift, **extra)
    a.partner_with(b)
    b.partner_with(a)
    a.robert("keys", "init")
    b.robert("keys", "init")
    k_g = root / "k_g"
    a.robert("keys", "export-federation-key", str(k_g))
    b.robert("keys", "import-federation-key", str(k_g))
    return a, b, shift


class HoldingProxy:
    """A TCP relay in front of a federation service. With ``hold`` set, once a connection has carried
    more than ``request_bytes`` from the client (past the TLS handshake, into a delivery), nothing more
    goes back to the client: the server has the batch, the sender never hears the answer."""

    def __init__(self, target_port: int, request_bytes: int = 4000) -> None:
        self.target_port = target_port
        self.request_bytes = request_bytes
        self.hold = False
        self.port = 0
        self._server: Any = None
        self._writers: list[Any] = []

    async def start(self) -> None:
        import asyncio

        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio
        import contextlib

        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        sent = 0

        async def client_to_server() -> None:
            nonlocal sent
            while data := await reader.read(65536):
                sent += len(data)
                up_writer.write(data)
                await up_writer.drain()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                if self.hold and sent > self.request_bytes:
                    continue  # swallowed: the answer never arrives
                writer.write(data)
                await writer.drain()

        with contextlib.suppress(OSError, ConnectionError):
            await asyncio.gather(client_to_server(), server_to_client())
        for w in (writer, up_writer):
            w.close()

    def drop_connections(self) -> None:
        for w in self._writers:
            w.close()
        self._writers = []

    async def stop(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.close()
