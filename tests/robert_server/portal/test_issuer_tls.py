"""The portal reaches a code issuer that requires mutual TLS (ROBERT_PORTAL_CODES_TLS_*)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock
from robert_common.settings import SettingsError, load_settings
from robert_server.codes import issuers
from robert_server.codes.server import start_server
from robert_server.portal.config import issuer_channel_credentials
from robert_server.portal.issuer import IssuerClient, IssuerUnavailable
from tests.fixtures.codes import codes_settings_overrides
from tests.robert_server.codes.test_mtls import _cert, _pem


async def test_the_portal_speaks_mutual_tls_to_the_code_issuer(
    db: AsyncDatabase, tmp_path: Path, codes_clock: ManualClock
) -> None:
    ca = _cert("test CA", None, ca=True)
    files = {
        "ca.pem": _pem(*ca)[0],
        **dict(zip(("server.pem", "server.key"), _pem(*_cert("code issuer", ca, ca=False)), strict=True)),
        **dict(zip(("portal.pem", "portal.key"), _pem(*_cert("prostopcovid", ca, ca=False)), strict=True)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    server_settings = load_settings(
        data_dir=tmp_path, codes_tls_cert=tmp_path / "server.pem", codes_tls_key=tmp_path / "server.key",
        codes_tls_client_ca=tmp_path / "ca.pem", **codes_settings_overrides(),
    )  # fmt: skip
    server, port, service = await start_server(db, server_settings, codes_clock, listen="127.0.0.1:0")
    token = await issuers.add(db, "prostopcovid", service.now())
    address = f"127.0.0.1:{port}"
    portal = load_settings(
        data_dir=tmp_path, portal_codes_tls_ca=tmp_path / "ca.pem",
        portal_codes_tls_cert=tmp_path / "portal.pem", portal_codes_tls_key=tmp_path / "portal.key",
    )  # fmt: skip
    server_only = load_settings(data_dir=tmp_path, portal_codes_tls_ca=tmp_path / "ca.pem")
    clients = [
        IssuerClient(address, token, 5.0, issuer_channel_credentials(portal)),
        IssuerClient(address, token, 2.0, issuer_channel_credentials(server_only)),  # no client certificate
        IssuerClient(address, token, 2.0, None),  # plain text
    ]
    try:
        code = await clients[0].issue_short()
        assert len(code.code) == 6
        for client in clients[1:]:
            with pytest.raises(IssuerUnavailable):
                await client.issue_short()
    finally:
        for client in clients:
            await client.close()
        await server.stop(None)


def test_incomplete_tls_settings_stop_the_start(tmp_path: Path) -> None:
    cases = [
        ({"portal_codes_tls_cert": tmp_path / "c.pem"}, "need ROBERT_PORTAL_CODES_TLS_CA"),
        ({"portal_codes_tls_ca": tmp_path / "ca.pem", "portal_codes_tls_key": tmp_path / "k"}, "go together"),
        ({"portal_codes_tls_ca": tmp_path / "missing.pem"}, "No such file"),
    ]
    for values, message in cases:
        with pytest.raises(SettingsError, match=message):
            issuer_channel_credentials(load_settings(data_dir=tmp_path, **values))
