"""The PKCS#11 key store on a real SoftHSM2 token: custody attributes, sealing in the token, ECDH in
the token, rotation, another process's changes, settings selection and the ``robert keys`` CLI."""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import os
import subprocess
import sys
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto_backend import protocol
from crypto_backend.keystore import (
    KeyStore,
    KeyStoreError,
    UnknownKeyVersionError,
    create_keystore,
    ensure_dev_keystore,
    open_keystore,
)
from crypto_backend.keystore.pkcs11 import Pkcs11KeyStore
from robert_common.clock import ManualClock
from robert_common.settings import load_settings
from robert_server.cli import main as robert_main
from tests.crypto_backend.softhsm import PIN, SoftHsmToken, token_session

TODAY = dt.date(2024, 6, 3)
A = pkcs11.Attribute


def _store(token: SoftHsmToken) -> Pkcs11KeyStore:
    store = Pkcs11KeyStore.create(token.module, token.label, PIN)
    store.rotate(TODAY, days_ahead=5, retention_days=20)
    return store


def _objects(token: SoftHsmToken) -> dict[str, list[dict[str, object]]]:
    """Every object on the token with its custody attributes, read through a session of our own."""
    out: dict[str, list[dict[str, object]]] = {}
    with token_session(token) as session:
        for obj in session.get_objects({A.TOKEN: True}):
            cls = obj[A.CLASS]
            info: dict[str, object] = {"class": cls}
            if cls != pkcs11.ObjectClass.PUBLIC_KEY:
                info.update(
                    sensitive=obj[A.SENSITIVE], extractable=obj[A.EXTRACTABLE], private=obj[A.PRIVATE]
                )
            out.setdefault(str(obj[A.LABEL]), []).append(info)
    return out


def test_keys_live_in_the_token_with_the_right_custody(softhsm: SoftHsmToken) -> None:
    store = _store(softhsm)
    try:
        assert isinstance(store, KeyStore)
        objects = _objects(softhsm)
        kek = objects["robert-kek-1"]
        assert kek == [{"class": pkcs11.ObjectClass.SECRET_KEY, "sensitive": True, "extractable": False,
                        "private": True}]  # fmt: skip
        private = [o for o in objects["robert-registration"] if o["class"] == pkcs11.ObjectClass.PRIVATE_KEY]
        assert private and private[0]["sensitive"] is True and private[0]["extractable"] is False
        for label in ["robert-kg-1", *(f"robert-ks-{TODAY + dt.timedelta(days=i)}" for i in range(6))]:
            assert objects[label][0]["sensitive"] is True, label  # never readable as an attribute
        assert store.days() == [TODAY + dt.timedelta(days=i) for i in range(6)]
        assert all(len(store.day_key(d) or b"") == 24 for d in store.days())
        assert len({store.day_key(d) for d in store.days()}) == 6
        assert len(store.federation_key()) == 32
        again = Pkcs11KeyStore.open(softhsm.module, softhsm.label, PIN)
        try:  # a second session unwraps the same values
            assert again.day_key(TODAY) == store.day_key(TODAY)
            assert again.federation_key() == store.federation_key()
            assert again.registration_public_key() == store.registration_public_key()
        finally:
            again.close()
        assert "robert-test" in repr(store) and store.federation_key().hex() not in repr(store)
    finally:
        store.close()


def test_seal_is_aes_gcm_in_the_token_bound_to_id_a(softhsm: SoftHsmToken) -> None:
    store = _store(softhsm)
    try:
        version, sealed = store.seal(b"k" * 64, b"id_a1")
        assert version == 1 and len(sealed) == 12 + 64 + 16 and b"k" * 8 not in sealed
        assert store.unseal(1, sealed, b"id_a1") == b"k" * 64
        with pytest.raises(KeyStoreError, match="does not authenticate"):
            store.unseal(1, sealed, b"id_a2")  # associated data binds the id_A
        with pytest.raises(KeyStoreError, match="does not authenticate"):
            store.unseal(1, sealed[:-1] + bytes([sealed[-1] ^ 1]), b"id_a1")
        with pytest.raises(KeyStoreError):
            store.unseal(1, sealed[:20], b"id_a1")
        with pytest.raises(UnknownKeyVersionError):
            store.unseal(9, sealed, b"id_a1")
        # It is plain AES-256-GCM (same layout as the file store): a key of our own sealed the same way
        # by the token opens with a reference implementation.
        with token_session(softhsm) as session:
            key = bytes(range(32))
            obj = session.create_object({
                A.CLASS: pkcs11.ObjectClass.SECRET_KEY, A.KEY_TYPE: pkcs11.KeyType.AES, A.VALUE: key,
                A.TOKEN: False, A.ENCRYPT: True,
            })  # fmt: skip
            nonce = bytes(12)
            out = obj.encrypt(b"x" * 64, mechanism=pkcs11.Mechanism.AES_GCM,
                              mechanism_param=pkcs11.mechanisms.GCMParams(nonce, b"id_a1"))  # fmt: skip
            assert AESGCM(key).decrypt(nonce, bytes(out), b"id_a1") == b"x" * 64
    finally:
        store.close()


def test_ecdh_in_the_token_matches_the_protocol(softhsm: SoftHsmToken) -> None:
    store = _store(softhsm)
    try:
        phone = ec.generate_private_key(ec.SECP256R1())
        spki = phone.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        k_mac, k_tuples = store.derive_client_keys(spki)
        server = serialization.load_der_public_key(store.registration_public_key())
        assert isinstance(server, ec.EllipticCurvePublicKey)
        secret = phone.exchange(ec.ECDH(), server)  # what the phone computes (PROTOCOL.md 2)
        assert k_mac == hmac.digest(secret, protocol.LABEL_MAC, "sha256")
        assert k_tuples == hmac.digest(secret, protocol.LABEL_TUPLES, "sha256")
        other = (
            ec.generate_private_key(ec.SECP384R1())
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        for bad in (b"", b"\x30\x03junk", other, spki[:-1]):
            with pytest.raises(protocol.ProtocolError):
                store.derive_client_keys(bad)
        # no session object (the shared secret) is left behind in the token
        days = {f"robert-ks-{TODAY + dt.timedelta(days=i)}" for i in range(6)}
        assert set(_objects(softhsm)) == {"robert-kek-1", "robert-kg-1", "robert-registration", *days}
    finally:
        store.close()


def test_rotation_versions_retirement_and_another_process(softhsm: SoftHsmToken) -> None:
    store = _store(softhsm)
    try:
        _, sealed1 = store.seal(b"a" * 64, b"id_a1")
        first = store.day_key(TODAY)
        result = store.rotate(TODAY + dt.timedelta(days=30), days_ahead=5, retention_days=27)
        assert result.purged == [TODAY + dt.timedelta(days=i) for i in range(3)]
        assert len(result.added) == 6 and store.day_key(TODAY) is None and first is not None
        assert not store.needs_rotation(TODAY + dt.timedelta(days=30), 5, 27)
        k_g = store.federation_key()
        assert store.rotate_federation_key() == 2 and store.federation_key() != k_g
        # another process rotates the KEK: this one notices, reloads, and still opens version 1
        store.change_check_interval = 3600
        assert not store.changed()
        env = {**os.environ, **softhsm.env()}
        code = (
            "from crypto_backend.keystore import open_keystore; from robert_common.settings import"
            " load_settings; s = open_keystore(load_settings()); print(s.rotate_kek()); s.close()"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, check=True, text=True
        )
        assert out.stdout.strip() == "2"
        assert not store.changed()  # listed less than change_check_interval ago: not listed again
        store.change_check_interval = 0
        assert store.changed()
        store.reload()
        assert store.kek_versions() == [1, 2] and store.kek_version == 2
        version, sealed2 = store.seal(b"b" * 64, b"id_a2")
        assert version == 2 and store.unseal(1, sealed1, b"id_a1") == b"a" * 64
        with pytest.raises(KeyStoreError, match="current"):
            store.retire_kek(2)
        store.retire_kek(1)
        assert store.kek_versions() == [2] and "robert-kek-1" not in _objects(softhsm)
        with pytest.raises(UnknownKeyVersionError):
            store.unseal(1, sealed1, b"id_a1")
        assert store.unseal(2, sealed2, b"id_a2") == b"b" * 64
    finally:
        store.close()


def test_settings_select_the_store_and_errors_are_clear(
    softhsm: SoftHsmToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.keystore == "pkcs11"
    with pytest.raises(KeyStoreError, match="robert keys init"):
        open_keystore(settings)  # a token without ROBERT keys
    store = create_keystore(settings)
    store.close()
    with pytest.raises(KeyStoreError, match="already holds"):
        create_keystore(settings)
    for change, message in (
        ({"pkcs11_pin": "0000-wrong"}, "wrong PIN"),
        ({"pkcs11_token_label": "no-such-token"}, "no PKCS#11 token"),
        ({"pkcs11_module": tmp_path / "absent.so"}, "no PKCS#11 module"),
        ({"pkcs11_module": None}, "ROBERT_PKCS11_MODULE"),
    ):
        with pytest.raises(KeyStoreError, match=message) as info:
            open_keystore(load_settings(data_dir=tmp_path, **change))
        assert PIN not in str(info.value) and "0000-wrong" not in str(info.value)
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    monkeypatch.delenv("ROBERT_PKCS11_PIN")
    with pytest.raises(KeyStoreError, match="ROBERT_PKCS11_PIN"):
        open_keystore(load_settings(data_dir=tmp_path))
    store = open_keystore(load_settings(data_dir=tmp_path, pkcs11_pin_file=pin_file))
    assert isinstance(store, Pkcs11KeyStore)
    store.close()


def test_robert_up_preparation_creates_keys_once(softhsm: SoftHsmToken, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    clock = ManualClock(dt.datetime(2024, 6, 3, 12, tzinfo=dt.UTC).timestamp())
    ensure_dev_keystore(settings, clock)
    store = open_keystore(settings)
    public = store.registration_public_key()
    assert store.day_key(TODAY + dt.timedelta(days=settings.bundle_days)) is not None
    store.close()
    clock.advance(2 * 86_400)
    ensure_dev_keystore(settings, clock)  # kept, and brought up to date
    store = open_keystore(settings)
    assert store.registration_public_key() == public
    assert store.day_key(TODAY + dt.timedelta(days=2 + settings.bundle_days)) is not None
    store.close()
    assert not (tmp_path / "keystore.json").exists() and not (tmp_path / "keystore.pass").exists()


def test_cli_init_rotate_public_on_the_token(
    softhsm: SoftHsmToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("ROBERT_DATA_DIR", str(tmp_path))
    assert robert_main(["keys", "init"]) == 0
    out = capsys.readouterr().out
    assert "PKCS#11 token" in out
    assert robert_main(["keys", "init"]) == 1  # never overwrites
    assert "already holds" in capsys.readouterr().err
    assert robert_main(["keys", "rotate", "--kek", "--no-reseal", "--federation-key"]) == 0
    out = capsys.readouterr().out
    assert "KEK version 2" in out and "K_G version 2" in out
    assert robert_main(["keys", "public"]) == 0
    public = serialization.load_der_public_key(base64.b64decode(capsys.readouterr().out.strip()))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    monkeypatch.setenv("ROBERT_PKCS11_PIN", "0000-wrong")
    assert robert_main(["keys", "public"]) == 1
    err = capsys.readouterr().err
    assert "wrong PIN" in err and "Traceback" not in err and "0000-wrong" not in err


def test_stores_of_one_process_share_the_login(softhsm: SoftHsmToken) -> None:
    """PKCS#11 logs in a whole process: a second store neither fails nor logs the first one out when it
    closes, and a wrong PIN is refused even though the process is logged in already."""
    first = _store(softhsm)
    try:
        second = Pkcs11KeyStore.open(softhsm.module, softhsm.label, PIN)
        second.close()
        with pytest.raises(KeyStoreError, match="wrong PIN"):
            Pkcs11KeyStore.open(softhsm.module, softhsm.label, "0000-wrong")
        version, sealed = first.seal(b"s" * 64, b"id_a1")  # still logged in
        assert first.unseal(version, sealed, b"id_a1") == b"s" * 64
    finally:
        first.close()
    with pytest.raises(KeyStoreError, match="wrong PIN"):
        Pkcs11KeyStore.open(softhsm.module, softhsm.label, "0000-wrong")
