"""A SoftHSM2 token for the tests (Debian package ``softhsm2``, installed by scripts/test-deps).

SoftHSM2 reads ``SOFTHSM2_CONF`` and lists its tokens once, when a process first loads the module:
so the test session makes one config and one token in a temporary folder before any test loads it
(:func:`make_token`), and each test starts from an empty token (:func:`wipe`). Child processes
(``robert keys``, ``robert up``) get the same token through :meth:`SoftHsmToken.env`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODULE_CANDIDATES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
)
PIN = "4711-user"
SO_PIN = "0815-officer"


@dataclass(frozen=True)
class SoftHsmToken:
    module: Path
    label: str
    conf: Path

    def env(self) -> dict[str, str]:
        """Environment of a process that uses this token as its key store."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "ROBERT_KEYSTORE": "pkcs11",
            "ROBERT_PKCS11_MODULE": str(self.module),
            "ROBERT_PKCS11_TOKEN_LABEL": self.label,
            "ROBERT_PKCS11_PIN": PIN,
        }


def softhsm_module() -> Path:
    for path in MODULE_CANDIDATES:
        if path.is_file():
            return path
    raise AssertionError("SoftHSM2 is not installed: run scripts/test-deps (Debian package softhsm2)")


def make_token(root: Path, label: str = "robert-test") -> SoftHsmToken:
    """A config and an initialised token under ``root``; SOFTHSM2_CONF is set for this process."""
    util = shutil.which("softhsm2-util")
    assert util, "softhsm2-util is missing: run scripts/test-deps (Debian package softhsm2)"
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True,
        capture_output=True,
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return SoftHsmToken(module=softhsm_module(), label=label, conf=conf)


@contextlib.contextmanager
def token_session(token: SoftHsmToken) -> Iterator[Any]:
    """A read-write session of the test itself. PKCS#11 logs in a whole process: when a key store of
    this process is open, the process is logged in already and this session must not log out."""
    import pkcs11

    handle = pkcs11.lib(str(token.module)).get_token(token_label=token.label)
    try:
        session = handle.open(rw=True, user_pin=PIN)
    except pkcs11.UserAlreadyLoggedIn:
        session = handle.open(rw=True)
    with session:
        yield session


def wipe(token: SoftHsmToken) -> None:
    """Destroy every object on the token (each test starts from an empty one)."""
    import pkcs11

    with token_session(token) as session:
        for obj in list(session.get_objects({pkcs11.Attribute.TOKEN: True})):
            obj.destroy()
