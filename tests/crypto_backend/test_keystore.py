"""The file key store: encryption at rest, wrong passphrase, tampering, rotation, dev store, CLI."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crypto_backend.keystore import (
    FileKeyStore,
    KeyStore,
    KeyStoreError,
    UnknownKeyVersionError,
    ensure_dev_keystore,
    open_keystore,
    resolve_passphrase,
)
from robert_common.clock import ManualClock
from robert_common.settings import load_settings
from robert_server.cli import main as robert_main

PASS = b"correct horse battery staple"
TODAY = dt.date(2024, 6, 3)
FAST_N = 2**10


def _store(tmp_path: Path) -> FileKeyStore:
    store = FileKeyStore.create(tmp_path / "ks.json", PASS, scrypt_n=FAST_N)
    store.rotate(TODAY, days_ahead=5, retention_days=20)
    return store


def test_round_trip_keeps_every_key(tmp_path: Path) -> None:
    store = _store(tmp_path)
    again = FileKeyStore.load(store.path, PASS)
    assert isinstance(again, KeyStore)
    assert again.days() == [TODAY + dt.timedelta(days=i) for i in range(6)]
    assert all(
        again.day_key(d) == store.day_key(d) and len(again.day_key(d) or b"") == 24 for d in again.days()
    )
    assert again.day_key(TODAY - dt.timedelta(days=1)) is None
    assert again.federation_key() == store.federation_key() and len(store.federation_key()) == 32
    assert again.registration_public_key() == store.registration_public_key()
    public = serialization.load_der_public_key(store.registration_public_key())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"


def test_file_is_not_plaintext(tmp_path: Path) -> None:
    store = _store(tmp_path)
    raw = store.path.read_bytes()
    secrets = [store.federation_key(), *(store.day_key(d) or b"" for d in store.days())]
    for key in secrets:
        assert key not in raw
        assert base64.b64encode(key) not in raw
        assert key.hex().encode() not in raw
    assert b"day_keys" not in raw and b"registration_private_key" not in raw
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert "ks.json" in repr(store) and base64.b64encode(store.federation_key()).decode() not in repr(store)


def test_wrong_passphrase_fails_cleanly(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(KeyStoreError) as info:
        FileKeyStore.load(store.path, b"hunter2-attempt")
    assert "passphrase" in str(info.value) and "hunter2" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.update(ciphertext=base64.b64encode(b"x" * 200).decode()),
        lambda d: d["kdf"].update(n=2**11),  # header is authenticated
        lambda d: d["kdf"].update(n=2**30),  # a hostile cost parameter is refused before any work
        lambda d: d["kdf"].update(salt="not base64!"),
        lambda d: d.update(format="something-else"),
        lambda d: d.pop("nonce"),
    ],
)
def test_tampered_file_is_refused(tmp_path: Path, tamper: object) -> None:
    store = _store(tmp_path)
    doc = json.loads(store.path.read_text())
    tamper(doc)  # type: ignore[operator]
    store.path.write_text(json.dumps(doc))
    started = time.monotonic()
    with pytest.raises(KeyStoreError):
        FileKeyStore.load(store.path, PASS)
    assert time.monotonic() - started < 5  # never hangs on a hostile header


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'{"format": 1}'])
def test_malformed_file_is_refused(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "ks.json").write_bytes(content)
    with pytest.raises(KeyStoreError):
        FileKeyStore.load(tmp_path / "ks.json", PASS)


def test_missing_file_and_no_overwrite(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="robert keys init"):
        FileKeyStore.load(tmp_path / "absent.json", PASS)
    store = _store(tmp_path)
    before = store.path.read_bytes()
    with pytest.raises(KeyStoreError, match="already exists"):
        FileKeyStore.create(store.path, PASS, scrypt_n=FAST_N)
    assert store.path.read_bytes() == before
    with pytest.raises(KeyStoreError):
        FileKeyStore.create(tmp_path / "other.json", b"", scrypt_n=FAST_N)


def test_rotation_adds_new_days_and_purges_old(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = store.day_key(TODAY)
    later = TODAY + dt.timedelta(days=30)
    result = store.rotate(later, days_ahead=5, retention_days=27)
    # Kept: days >= later - 27 = TODAY + 3; the 6 days from TODAY to TODAY + 5 lose the first 3.
    assert result.purged == [TODAY + dt.timedelta(days=i) for i in range(3)]
    assert result.added == [later + dt.timedelta(days=i) for i in range(6)]
    reopened = FileKeyStore.load(store.path, PASS)
    assert reopened.day_key(TODAY) is None and store.day_key(TODAY) is None and first is not None
    assert reopened.day_key(TODAY + dt.timedelta(days=3)) is not None
    assert reopened.day_key(later + dt.timedelta(days=5)) is not None
    assert not reopened.needs_rotation(later, 5, 27)
    again = store.rotate(later, days_ahead=5, retention_days=27)
    assert again.added == [] and again.purged == []
    assert reopened.needs_rotation(later + dt.timedelta(days=1), 5, 27)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp file


def test_kek_rotation_keeps_old_versions(tmp_path: Path) -> None:
    store = _store(tmp_path)
    v1, sealed1 = store.seal(b"k" * 64, b"id_a1")
    assert v1 == 1 and b"k" * 8 not in sealed1
    assert store.rotate_kek() == 2
    v2, sealed2 = store.seal(b"j" * 64, b"id_a2")
    assert v2 == 2
    reopened = FileKeyStore.load(store.path, PASS)
    assert reopened.unseal(1, sealed1, b"id_a1") == b"k" * 64
    assert reopened.unseal(2, sealed2, b"id_a2") == b"j" * 64
    with pytest.raises(KeyStoreError):
        reopened.unseal(1, sealed1, b"id_aX")  # associated data binds the id_A
    with pytest.raises(UnknownKeyVersionError):
        reopened.unseal(7, sealed1, b"id_a1")
    k_g = store.federation_key()
    assert store.rotate_federation_key() == 2 and store.federation_key_version == 2
    assert store.federation_key() != k_g


def test_reload_sees_another_writer(tmp_path: Path) -> None:
    store = _store(tmp_path)
    other = FileKeyStore.load(store.path, PASS)
    assert not store.changed_on_disk()
    other.rotate(TODAY + dt.timedelta(days=10), days_ahead=0, retention_days=20)
    assert store.changed_on_disk()
    store.reload()
    assert store.day_key(TODAY + dt.timedelta(days=10)) == other.day_key(TODAY + dt.timedelta(days=10))


def test_passphrase_sources(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, keystore_passphrase="from env")
    assert resolve_passphrase(settings) == (b"from env", False)
    pass_file = tmp_path / "pass.txt"
    pass_file.write_text("from file\n")
    settings = load_settings(data_dir=tmp_path, keystore_passphrase_file=pass_file)
    assert resolve_passphrase(settings) == (b"from file", False)
    with pytest.raises(KeyStoreError, match="ROBERT_KEYSTORE_PASSPHRASE"):
        resolve_passphrase(load_settings(data_dir=tmp_path / "empty"))


def test_dev_keystore_created_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ROBERT_KEYSTORE_PASSPHRASE", "ROBERT_KEYSTORE_PASSPHRASE_FILE", "ROBERT_KEYSTORE_PATH"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings(data_dir=tmp_path / "data")
    clock = ManualClock(dt.datetime(2024, 6, 3, 12, tzinfo=dt.UTC).timestamp())
    path = ensure_dev_keystore(settings, clock)
    pass_file = tmp_path / "data" / "keystore.pass"
    assert stat.S_IMODE(pass_file.stat().st_mode) == 0o600
    store = open_keystore(settings)
    assert store.day_key(TODAY) is not None
    assert store.day_key(TODAY + dt.timedelta(days=settings.bundle_days)) is not None
    public = store.registration_public_key()
    clock.advance(2 * 86_400)
    assert ensure_dev_keystore(settings, clock) == path  # kept, and brought up to date
    store = open_keystore(settings)
    assert store.registration_public_key() == public
    assert store.day_key(TODAY + dt.timedelta(days=2 + settings.bundle_days)) is not None


def test_cli_init_rotate_public(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("ROBERT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ROBERT_KEYSTORE_PASSPHRASE", "cli passphrase")
    monkeypatch.delenv("ROBERT_KEYSTORE_PATH", raising=False)
    assert robert_main(["keys", "init"]) == 0
    assert robert_main(["keys", "init"]) == 1  # never overwrites
    assert robert_main(["keys", "rotate", "--kek", "--no-reseal"]) == 0
    assert "KEK version 2" in capsys.readouterr().out
    monkeypatch.delenv("ROBERT_MONGODB_URI", raising=False)
    assert robert_main(["keys", "reseal"]) == 1  # needs the crypto database: a clear message
    err = capsys.readouterr().err
    assert "ROBERT_MONGODB_URI" in err and "Traceback" not in err
    assert robert_main(["keys", "public"]) == 0
    out = capsys.readouterr().out.strip()
    public = serialization.load_der_public_key(base64.b64decode(out))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    monkeypatch.setenv("ROBERT_KEYSTORE_PASSPHRASE", "wrong")
    assert robert_main(["keys", "public"]) == 1
    err = capsys.readouterr().err
    assert "passphrase" in err and "Traceback" not in err
    assert os.path.exists(tmp_path / "keystore.json")
