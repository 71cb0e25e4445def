"""A throw-away local system for load runs: SecantusDB on a known port, then ``robert up`` beside it.

``robert up`` starts its embedded database on a random port that other commands cannot find; load runs
need ``robert issuers add`` and ``robert matcher --once`` against the same database, so this starts the
database itself and hands its URI to everything. Captcha off, status gap 0 (load tests poll faster
than every 30 min), key store auto-rotation on, all on 127.0.0.1 with free ports, data in a temp folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from robert_common.mongo import EmbeddedMongo, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class LocalSystem:
    def __init__(self, *, with_matcher: bool = True, extra_env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="robert-load-"))
        self.with_matcher = with_matcher
        self.extra_env = extra_env or {}
        self.db: EmbeddedMongo | None = None
        self.up: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.http_port = free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> LocalSystem:
        self.db = EmbeddedMongo(self.dir / "db")
        uri = self.db.start()
        crypto, codes = free_port(), free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ROBERT_MONGODB_URI": uri,
            "ROBERT_DATA_DIR": str(self.dir),
            "ROBERT_CAPTCHA": "off",
            "ROBERT_STATUS_MIN_EPOCH_GAP": "0",
            "ROBERT_KEYSTORE_AUTO_ROTATE": "true",
            "ROBERT_LOG_LEVEL": "WARNING",
            "ROBERT_HTTP_PORT": str(self.http_port),
            "ROBERT_METRICS_PORT": str(free_port()),
            "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{crypto}",
            "ROBERT_CRYPTO_ADDRESS": f"127.0.0.1:{crypto}",
            "ROBERT_CODES_LISTEN": f"127.0.0.1:{codes}",
            "ROBERT_CODES_ADDRESS": f"127.0.0.1:{codes}",
            "ROBERT_CLOCK_SHIFT_FILE": str(self.dir / "clock_shift"),
            **self.extra_env,
        }
        cmd = [str(BIN / "robert"), "up"] + ([] if self.with_matcher else ["--without", "matcher"])
        self.up = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.up is not None and self.up.poll() is not None:
                raise RuntimeError(f"robert up exited with {self.up.returncode}")
            try:
                with urllib.request.urlopen(self.base_url + "/api/v6/clock", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        time.sleep(1.0)  # let the other components finish starting
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the system did not answer /clock in time")

    def robert(self, *args: str, timeout: float = 600) -> str:
        """Run a ``robert`` command against this system and return its standard output."""
        done = subprocess.run(
            [str(BIN / "robert"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"robert {' '.join(args[:2])} failed: {done.stderr.strip()[-300:]}")
        return done.stdout

    def issuer_token(self) -> str:
        out = self.robert("issuers", "add", f"load-{os.getpid()}-{time.monotonic_ns()}").strip()
        return out.split()[-1]

    def processes(self) -> list[psutil.Process]:
        """The server side: ``robert up``, its children and the database."""
        procs = []
        for pid in [p.pid for p in (self.up, self.db.proc if self.db else None) if p is not None]:
            try:
                parent = psutil.Process(pid)
                procs += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return procs

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far, per component command line."""
        out: dict[str, float] = {}
        for p in self.processes():
            try:
                t = p.cpu_times()
                cmd = " ".join(p.cmdline()[2:4]) or p.name()
            except psutil.NoSuchProcess:
                continue
            out[cmd] = out.get(cmd, 0.0) + t.user + t.system
        return out

    def stop(self) -> None:
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGTERM)
            try:
                self.up.wait(30)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        if self.db is not None:
            self.db.stop()

    def __enter__(self) -> LocalSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
