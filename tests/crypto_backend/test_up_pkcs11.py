"""``robert up`` with ROBERT_KEYSTORE=pkcs11: the keys are created in a SoftHSM2 token, the crypto
service seals in it, and a phone registers and polls its status end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest

from crypto_backend.keystore import open_keystore
from robert_common.mongo import free_port, mongo_client
from robert_common.settings import load_settings
from simulator.backend import fetch_server_key
from simulator.phone import Phone
from tests.crypto_backend.softhsm import SoftHsmToken
from tests.test_up import _wait_healthy

pytestmark = pytest.mark.slow


async def test_robert_up_on_a_pkcs11_token(softhsm: SoftHsmToken, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("http", "metrics", "crypto", "codes", "portal", "idp")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROBERT_")},
        **softhsm.env(),
        "ROBERT_DATA_DIR": str(tmp_path / "data"),
        "ROBERT_HTTP_PORT": str(ports["http"]),
        "ROBERT_METRICS_PORT": str(ports["metrics"]),
        "ROBERT_CRYPTO_LISTEN": f"127.0.0.1:{ports['crypto']}",
        "ROBERT_CRYPTO_ADDRESS": f"127.0.0.1:{ports['crypto']}",
        "ROBERT_CODES_LISTEN": f"127.0.0.1:{ports['codes']}",
        "ROBERT_CODES_ADDRESS": f"127.0.0.1:{ports['codes']}",
        "ROBERT_PORTAL_PORT": str(ports["portal"]),
        "ROBERT_PORTAL_DEV_IDP_PORT": str(ports["idp"]),
        "ROBERT_CAPTCHA": "off",
    }
    log_path = tmp_path / "up.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for over HTTP
        [sys.executable, "-m", "robert_server.cli", "up"], env=env, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=log_file,
    )  # fmt: skip
    try:
        await _wait_healthy(f"http://127.0.0.1:{ports['metrics']}/health", proc)
        tls_dir = tmp_path / "data" / "tls"  # robert up's development certificates (mutual TLS)
        creds = grpc.ssl_channel_credentials(*(
            (tls_dir / name).read_bytes() for name in ("ca.pem", "seed.key", "seed.pem")
        ))  # fmt: skip
        key = await fetch_server_key(f"127.0.0.1:{ports['crypto']}", credentials=creds)
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
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log_file.close()
    stderr = log_path.read_bytes()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    data = tmp_path / "data"
    assert not (data / "keystore.json").exists() and not (data / "keystore.pass").exists()
