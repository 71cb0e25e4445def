"""``robert up`` with ROBERT_KEYSTORE=pkcs11: the keys are created in a SoftHSM2 token, the crypto
service seals in it, and a phone registers and polls its status end to end."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from crypto_backend.keystore import open_keystore
from robert_common.mongo import mongo_client
from robert_common.settings import load_settings
from simulator.backend import fetch_server_key
from simulator.phone import Phone
from tests.crypto_backend.softhsm import SoftHsmToken
from tests.fixtures.up import plane_credentials, start_up, stop_up, up_env, up_ports, wait_healthy

pytestmark = pytest.mark.slow


async def test_robert_up_on_a_pkcs11_token(softhsm: SoftHsmToken, tmp_path: Path) -> None:
    ports = up_ports()
    log_path = tmp_path / "up.log"
    proc = start_up(tmp_path, up_env(tmp_path, ports, **softhsm.env()), log=log_path)
    try:
        await wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        credentials = plane_credentials(tmp_path / "data")  # robert up's development certificates
        key = await fetch_server_key(f"127.0.0.1:{ports['crypto']}", credentials=credentials)
        async with aiohttp.ClientSession() as http:
            phone = Phone(f"http://127.0.0.1:{ports['http']}", key, http=http)
            registered = await phone.register()
            assert registered.status == 201, registered.body
            assert len(phone.tuples) >= 96 * 3
            status = await phone.status()
            assert status.status == 200, status.body
            assert status.body["riskLevel"] == 0
        settings = load_settings(data_dir=tmp_path / "data")
        client = mongo_client((tmp_path / "data" / "mongodb.uri").read_text().strip())
        docs = await client[settings.crypto_mongodb_database]["identities"].find().to_list()
        await client.close()
        store = open_keystore(settings)
        try:  # the key apps embed is the token's, and the token's KEK sealed the phone's keys
            assert key == store.registration_public_key()
            assert len(docs) == 1 and docs[0]["kek_version"] == 1
            assert len(store.unseal(1, docs[0]["keys"], docs[0]["_id"])) == 64
        finally:
            store.close()
    finally:
        stop_up(proc)
    stderr = log_path.read_bytes()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    data = tmp_path / "data"
    assert not (data / "keystore.json").exists() and not (data / "keystore.pass").exists()
