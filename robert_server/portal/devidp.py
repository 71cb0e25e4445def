"""Start and stop the development OpenID Connect provider (``dev_idp/idp.mjs``, npm ``oidc-provider``).

Used by ``robert portal dev-idp`` (so by ``robert up``) and by the tests. Its node packages are
installed by ``scripts/test-deps`` (``npm ci`` in ``dev_idp/``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

DEV_IDP_DIR = Path(__file__).with_name("dev_idp")
SCRIPT = DEV_IDP_DIR / "idp.mjs"
START_TIMEOUT = 20.0


class DevIdpError(RuntimeError):
    """The development provider could not start; the message says why."""


def command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise DevIdpError("node is not installed (scripts/test-deps installs it)")
    if not (DEV_IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        raise DevIdpError(f"run `npm ci` in {DEV_IDP_DIR} (scripts/test-deps does)")
    return [node, str(SCRIPT)]


def environment(
    port: int, client_id: str, client_secret: str, redirect_uris: list[str], post_logout_uris: list[str],
    client_jwks: dict[str, Any] | None = None,
) -> dict[str, str]:  # fmt: skip
    """The provider's environment; with ``client_jwks`` the client authenticates with private_key_jwt."""
    return {
        "IDP_CLIENT_JWKS": json.dumps(client_jwks) if client_jwks else "",
        **os.environ,
        "IDP_PORT": str(port),
        "IDP_CLIENT_ID": client_id,
        "IDP_CLIENT_SECRET": client_secret,
        "IDP_REDIRECT_URIS": ",".join(redirect_uris),
        "IDP_POST_LOGOUT_REDIRECT_URIS": ",".join(post_logout_uris),
        "NODE_NO_WARNINGS": "1",
    }


class DevIdp:
    """One running development provider; ``url`` is its issuer (http://127.0.0.1:<port>)."""

    def __init__(self, port: int, client_id: str, client_secret: str, redirect_uris: list[str],
                 post_logout_uris: list[str], client_jwks: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.env = environment(port, client_id, client_secret, redirect_uris, post_logout_uris, client_jwks)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> str:
        self.proc = subprocess.Popen(
            command(), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT)
        if not line or not line[0].startswith("listening "):
            self.stop()
            raise DevIdpError("the development OIDC provider did not start")
        self.url = line[0].split()[1]
        return self.url

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
