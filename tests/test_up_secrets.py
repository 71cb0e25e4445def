"""Secrets only where they are used: ``robert up`` hands each child only its own settings.

A real ``robert up`` with a key-store passphrase, a codes pepper and a JWT key file in its environment;
the environment (/proc/PID/environ) and command line of every process it started must hold each secret
only where it is used: the passphrase in the crypto service alone, the pepper in the code issuer and the
API (both store or check codes), the JWT key file in the API alone; the embedded database none.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from robert_server.up import COMPONENTS, OS_ENVIRONMENT, SETTINGS_OF, child_environment
from tests.fixtures.up import start_up, stop_up, up_env, up_ports, wait_healthy

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/*/stat)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def _environ_and_cmdline(pid: int) -> tuple[str, str] | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return environ, cmdline


def _component(cmdline: list[str]) -> str:
    if "robert_server.cli" in cmdline:
        args = cmdline[cmdline.index("robert_server.cli") + 1 :]
        return args[0]
    if any("secantus" in part for part in cmdline):
        return "database"
    return " ".join(cmdline)[:80]


async def test_each_child_holds_only_its_own_secrets(tmp_path: Path) -> None:
    passphrase = f"passphrase-{secrets.token_hex(8)}"
    pepper = f"pepper-{secrets.token_hex(8)}"
    jwt_key = tmp_path / f"jwt-{secrets.token_hex(4)}.pem"
    jwt_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    jwt_key.chmod(0o600)
    ports = up_ports()
    env = up_env(
        tmp_path, ports,
        ROBERT_KEYSTORE_PASSPHRASE=passphrase,
        ROBERT_CODES_PEPPER=pepper,
        ROBERT_DECLARATION_TOKEN_KEY_FILE=str(jwt_key),
        UNRELATED_SECRET="not-for-children",  # any other variable of the operator's shell stays here
    )  # fmt: skip
    log_path = tmp_path / "up.log"
    proc = start_up(tmp_path, env, log=log_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        seen: dict[str, tuple[str, str]] = {}  # component -> (environ, command line)
        for pid in _children(proc.pid):
            found = _environ_and_cmdline(pid)
            if found is not None:
                seen[_component(found[1].split("\0"))] = found
    finally:
        stop_up(proc)
    assert {"crypto", "codes", "api", "matcher", "database"} <= set(seen), (
        sorted(seen),
        log_path.read_text(),
    )
    where = {
        secret: {name for name, (environ, _) in seen.items() if secret in environ}
        for secret in (passphrase, pepper, str(jwt_key), "not-for-children")
    }
    assert where == {
        passphrase: {"crypto"},
        pepper: {"codes", "api"},
        str(jwt_key): {"api"},
        "not-for-children": set(),
    }
    for name, (environ, cmdline) in seen.items():
        assert passphrase not in cmdline and pepper not in cmdline, name
        assert "ROBERT_SETTINGS_FILE" not in environ, name
    assert "ROBERT_" not in seen["database"][0]
    assert (tmp_path / "data" / "keystore.json").exists()  # made by `robert keys init --dev`
    assert proc.returncode == 0, log_path.read_text()[-2000:]


def test_every_component_has_an_allow_list() -> None:
    assert {name for name, _ in COMPONENTS} <= set(SETTINGS_OF)
    values = {"ROBERT_KEYSTORE_PASSPHRASE": "p", "ROBERT_CODES_PEPPER": "c", "ROBERT_TIME_START": "20200601"}
    environ = {"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "x", "LC_ALL": "C.UTF-8"}
    assert child_environment("matcher", values, environ) == {
        "PATH": "/bin", "LC_ALL": "C.UTF-8", "ROBERT_TIME_START": "20200601",
    }  # fmt: skip
    assert child_environment("crypto", values, environ)["ROBERT_KEYSTORE_PASSPHRASE"] == "p"
    assert "ROBERT_CODES_PEPPER" not in child_environment("crypto", values, environ)
    assert "PATH" in OS_ENVIRONMENT
    with pytest.raises(KeyError):
        child_environment("unknown", values, environ)


def test_the_values_handed_down_read_back_the_same(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from robert_common.settings import Settings, load_settings
    from robert_server.up import settings_environment

    settings = load_settings(
        data_dir=tmp_path, keystore_passphrase="pass", scoring_deltas=[1.0, 2.5], grpc_plaintext=True,
        codes_jwt_public_keys={}, http_port=1234,
    )  # fmt: skip
    env = settings_environment(settings)
    for key in [k for k in os.environ if k.startswith("ROBERT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = Settings()
    assert {n for n in Settings.model_fields if getattr(again, n) != getattr(settings, n)} == set()
