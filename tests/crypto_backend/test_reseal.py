"""KEK rotation re-seals every identity, then retires the old KEK (both key stores): batches, a
broken identity that keeps the old KEK alive, and a re-seal killed halfway (SIGKILL) then resumed."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pymongo.asynchronous.database import AsyncDatabase

from crypto_backend.identities import IdentityStore, reseal
from crypto_backend.keystore import FileKeyStore, KeyStore, UnknownKeyVersionError
from crypto_backend.keystore.pkcs11 import Pkcs11KeyStore
from tests.crypto_backend.softhsm import PIN, SoftHsmToken

NOW = dt.datetime(2024, 6, 3, 12, tzinfo=dt.UTC)
FILE_PASS = "reseal test passphrase"


@pytest.fixture(params=["file", "pkcs11"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[KeyStore, dict[str, str]]]:
    """A key store of each kind, and the environment that makes a child process open the same one."""
    if request.param == "file":
        path = tmp_path / "ks.json"
        store: KeyStore = FileKeyStore.create(path, FILE_PASS.encode(), scrypt_n=2**10)
        env = {
            "ROBERT_KEYSTORE": "file",
            "ROBERT_KEYSTORE_PATH": str(path),
            "ROBERT_KEYSTORE_PASSPHRASE": FILE_PASS,
        }
    else:
        token: SoftHsmToken = request.getfixturevalue("softhsm")
        store = Pkcs11KeyStore.create(token.module, token.label, PIN)
        env = token.env()
    try:
        yield store, env
    finally:
        store.close()


async def _identities(db: AsyncDatabase, store: KeyStore, n: int) -> tuple[IdentityStore, dict[bytes, bytes]]:
    identities = IdentityStore(db, store)
    keys = {}
    for _ in range(n):
        k = secrets.token_bytes(64)
        keys[await identities.create(k[:32], k[32:], NOW)] = k
    return identities, keys


async def _versions(db: AsyncDatabase) -> dict[int, int]:
    out: dict[int, int] = {}
    async for doc in db["identities"].find({}, {"kek_version": 1}):
        out[doc["kek_version"]] = out.get(doc["kek_version"], 0) + 1
    return out


async def _all_open(identities: IdentityStore, keys: dict[bytes, bytes]) -> None:
    opened = await identities.get_many(keys)
    assert len(opened) == len(keys)
    for id_a, k in keys.items():
        assert opened[id_a].k_mac + opened[id_a].k_tuples == k


async def test_reseal_moves_everything_then_retires(
    db: AsyncDatabase, store_env: tuple[KeyStore, dict[str, str]]
) -> None:
    store, _ = store_env
    identities, keys = await _identities(db, store, 23)
    assert store.rotate_kek() == 2
    newer = await _identities(db, store, 2)  # sealed under 2 already: never touched
    keys.update(newer[1])
    before = REGISTRY.get_sample_value("robert_crypto_resealed_total") or 0.0
    report = await reseal(identities, batch=5, rate=0, retire_after=0)
    assert REGISTRY.get_sample_value("robert_crypto_resealed_total") == before + 23  # progress metric
    assert REGISTRY.get_sample_value("robert_crypto_reseal_pending") == 0
    assert report.resealed == report.sealed == 23 and report.broken == 0 and report.retired == [1]
    assert report.passes == 2  # one that re-sealed, one that counted none left
    assert await _versions(db) == {2: 25}
    assert store.kek_versions() == [2]
    await _all_open(identities, keys)
    again = await reseal(identities, batch=5, rate=0, retire_after=0)
    assert again.resealed == again.sealed == 0 and again.retired == []


async def test_an_identity_that_does_not_open_keeps_the_old_kek(
    db: AsyncDatabase, store_env: tuple[KeyStore, dict[str, str]]
) -> None:
    store, _ = store_env
    identities, keys = await _identities(db, store, 6)
    broken = sorted(keys)[2]
    doc = await db["identities"].find_one({"_id": broken})
    assert doc is not None
    await db["identities"].update_one({"_id": broken}, {"$set": {"keys": bytes(len(doc["keys"]))}})
    store.rotate_kek()
    report = await reseal(identities, batch=4, rate=0, retire_after=0)
    assert report.resealed == 5 and report.broken == 1 and report.retired is None
    assert store.kek_versions() == [1, 2]  # counted, not assumed: version 1 still seals one identity
    assert await _versions(db) == {2: 5, 1: 1}


async def test_retirement_waits_for_running_services_and_catches_late_seals(
    db: AsyncDatabase, store_env: tuple[KeyStore, dict[str, str]], tmp_path: Path
) -> None:
    """A crypto service that has not reloaded yet still seals under the old KEK: retirement waits for
    ``retire_after`` and a last pass re-seals what it sealed meanwhile."""
    store, _ = store_env
    identities, keys = await _identities(db, store, 3)
    lagging = IdentityStore(db, store)
    store.rotate_kek()

    class Old:  # what a service still on KEK 1 does
        kek_version = 1

        def seal(self, plaintext: bytes, associated_data: bytes) -> tuple[int, bytes]:
            return 1, _seal_v1(store, plaintext, associated_data)

    late: dict[bytes, bytes] = {}

    async def service_on_old_kek() -> None:
        await asyncio.sleep(0.3)  # after the first passes found nothing left
        lagging.keystore = Old()  # type: ignore[assignment]
        k = secrets.token_bytes(64)
        late[await lagging.create(k[:32], k[32:], NOW)] = k

    started = asyncio.get_running_loop().time()
    report, _ = await asyncio.gather(
        reseal(identities, batch=10, rate=0, retire_after=1.0), service_on_old_kek()
    )
    assert asyncio.get_running_loop().time() - started >= 1.0
    assert report.resealed == 4 and report.retired == [1]
    assert await _versions(db) == {2: 4}
    await _all_open(identities, {**keys, **late})


def _seal_v1(store: KeyStore, plaintext: bytes, associated_data: bytes) -> bytes:
    """Seal under version 1 while version 2 is current (what a not-yet-reloaded service does)."""
    if isinstance(store, FileKeyStore):
        aead = store._keks[1]
        nonce = secrets.token_bytes(12)
        return nonce + aead.encrypt(nonce, plaintext, associated_data)
    assert isinstance(store, Pkcs11KeyStore)
    import pkcs11

    nonce = secrets.token_bytes(12)
    params = pkcs11.mechanisms.GCMParams(nonce, associated_data)
    return nonce + bytes(
        store._keks[1].encrypt(plaintext, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params)
    )


@pytest.mark.slow
async def test_reseal_killed_halfway_resumes_without_sealing_twice(
    db: AsyncDatabase, mongo_uri: str, store_env: tuple[KeyStore, dict[str, str]], tmp_path: Path
) -> None:
    store, store_vars = store_env
    total = 300
    identities, keys = await _identities(db, store, total)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")},
        **store_vars,
        "ROBERT_DATA_DIR": str(tmp_path / "data"),
        "ROBERT_MONGODB_URI": mongo_uri,
        "ROBERT_CRYPTO_MONGODB_DATABASE": db.name,
        "ROBERT_KEK_RESEAL_BATCH": "10",
        "ROBERT_KEK_RESEAL_RATE": "100",  # 3 s for all: time to kill it halfway
        "ROBERT_KEK_RETIRE_GRACE_SECONDS": "0",
    }
    cmd = [sys.executable, "-m", "robert_server.cli", "keys"]
    first = subprocess.Popen(  # noqa: ASYNC220 - started once, watched through the database
        [*cmd, "rotate", "--kek"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        while True:
            assert first.poll() is None, first.communicate()
            done = (await _versions(db)).get(2, 0)
            if done >= 50:
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    halfway = await _versions(db)
    assert 50 <= halfway.get(2, 0) < total and sum(halfway.values()) == total
    store.reload()
    assert store.kek_versions() == [1, 2]  # the rotation itself was done; nothing retired yet
    await _all_open(identities, keys)  # a crash leaves every identity openable

    env["ROBERT_KEK_RESEAL_RATE"] = "0"
    second = subprocess.run([*cmd, "reseal"], env=env, capture_output=True, text=True, timeout=120)  # noqa: ASYNC221
    assert second.returncode == 0, second.stderr
    # The resumed run sealed exactly the identities the first left under KEK 1: none twice.
    assert f"re-sealed {halfway[1]} identities ({halfway[1]} seal operations)" in second.stdout
    assert "retired: [1]" in second.stdout
    assert "Traceback" not in second.stderr
    assert await _versions(db) == {2: total}
    store.reload()
    assert store.kek_versions() == [2]
    await _all_open(identities, keys)
    with pytest.raises(UnknownKeyVersionError):
        store.unseal(1, b"\0" * 40, b"x")
