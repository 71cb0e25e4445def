"""Cost of each key store operation, file store vs PKCS#11 (SoftHSM2): ``python -m bench keystore``.

Per operation, in this process: seal and open an identity (AES-256-GCM, id_A as AAD: in memory for the
file store, CKM_AES_GCM in the token for PKCS#11), derive a phone's keys (ECDH + 2 HMAC; in the token
for PKCS#11), look for another process's change (stat / one object listing), and load the store (scrypt
for the file; unwrapping every K_S and K_G for the token). The PKCS#11 token is a SoftHSM2 token made
in a temporary folder (Debian package softhsm2); a real HSM adds its own latency per call.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto_backend.keystore import FileKeyStore, KeyStore
from crypto_backend.keystore.file import DEFAULT_SCRYPT_N

SOFTHSM_MODULES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
)
PIN = "bench-pin-1234"
DAYS = 35  # retention (20) + bundle horizon: what a production store holds


TOKENS = ("keystore", "service")  # one empty token per benchmark of this process


@functools.cache
def _softhsm() -> tuple[Path, Path] | None:
    """A SoftHSM2 config with the TOKENS, made once per process before any use: SoftHSM2 lists its
    tokens when first loaded. (module, config) or None when SoftHSM2 is not installed."""
    module = next((m for m in SOFTHSM_MODULES if m.is_file()), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="robert-bench-softhsm-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    for label in TOKENS:
        init = [util, "--init-token", "--free", "--label", f"bench-{label}", "--so-pin", "so-" + PIN]
        subprocess.run(
            [*init, "--pin", PIN],
            env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
        )  # fmt: skip
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return module, conf


def softhsm_env(token: str) -> dict[str, str] | None:
    """Settings selecting the empty SoftHSM2 token ``token`` (one of TOKENS) as the key store."""
    made = _softhsm()
    if made is None:
        return None
    module, conf = made
    return {
        "SOFTHSM2_CONF": str(conf),
        "ROBERT_KEYSTORE": "pkcs11",
        "ROBERT_PKCS11_MODULE": str(module),
        "ROBERT_PKCS11_TOKEN_LABEL": f"bench-{token}",
        "ROBERT_PKCS11_PIN": PIN,
    }


def pkcs11_store(env: dict[str, str], *, create: bool) -> KeyStore:
    from crypto_backend.keystore.pkcs11 import Pkcs11KeyStore

    args = (Path(env["ROBERT_PKCS11_MODULE"]), env["ROBERT_PKCS11_TOKEN_LABEL"], env["ROBERT_PKCS11_PIN"])
    return Pkcs11KeyStore.create(*args) if create else Pkcs11KeyStore.open(*args)


def _per_op(fn: Callable[[], Any], n: int) -> float:
    """Microseconds per call (best of three runs of n calls)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def _measure(name: str, store: KeyStore, load: Callable[[], KeyStore]) -> None:
    keys, id_a = secrets.token_bytes(64), secrets.token_bytes(5)
    version, sealed = store.seal(keys, id_a)
    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    seal = _per_op(lambda: store.seal(keys, id_a), 2000)
    unseal = _per_op(lambda: store.unseal(version, sealed, id_a), 2000)
    derive = _per_op(lambda: store.derive_client_keys(spki), 300)
    if hasattr(store, "change_check_interval"):
        store.change_check_interval = 0  # measure the listing itself, not its once-a-second throttle
    changed = _per_op(store.changed, 300)
    load_ms = _per_op(lambda: load().close(), 3) / 1000
    print(
        f"{name:8s} seal {seal:6.1f} µs   open {unseal:6.1f} µs   ECDH+derive {derive:6.1f} µs   "
        f"change check {changed:6.1f} µs   load {load_ms:6.1f} ms ({DAYS} day keys)"
    )


def main() -> None:
    today = dt.date.today()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keystore.json"
        store: KeyStore = FileKeyStore.create(path, b"bench", scrypt_n=DEFAULT_SCRYPT_N)
        store.rotate(today, DAYS - 1, 20)
        _measure("file", store, lambda: FileKeyStore.load(path, b"bench"))
        store.close()
    env = softhsm_env("keystore")
    if env is None:
        print("pkcs11   not measured: SoftHSM2 is not installed (scripts/test-deps installs it)")
        return
    store = pkcs11_store(env, create=True)
    store.rotate(today, DAYS - 1, 20)
    _measure("pkcs11", store, lambda: pkcs11_store(env, create=False))
    print("(pkcs11: AES-256-GCM with AAD is CKM_AES_GCM in SoftHSM2 2.6; ECDH is CKM_ECDH1_DERIVE, the two")
    print(" derivations CKM_SHA256_HMAC on the derived secret, all in the token; load unwraps K_S/K_G)")
    store.close()


if __name__ == "__main__":
    main()
