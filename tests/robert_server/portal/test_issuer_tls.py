"""The portal reaches the code issuer over the internal plane's mutual TLS (robert_common.tls): with the
plane's certificate ``portal`` by default, or with the files of ROBERT_PORTAL_CODES_TLS_*."""

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


async def test_the_portal_speaks_mutual_tls_to_the_code_issuer(
    db: AsyncDatabase, tmp_path: Path, codes_clock: ManualClock, test_pki: Path
) -> None:
    server_settings = load_settings(data_dir=tmp_path, grpc_tls_dir=test_pki, **codes_settings_overrides())
    server, port, service = await start_server(db, server_settings, codes_clock, listen="127.0.0.1:0")
    token = await issuers.add(db, "prostopcovid", service.now())
    address = f"127.0.0.1:{port}"
    plane = load_settings(data_dir=tmp_path, grpc_tls_dir=test_pki)  # the certificate `portal`
    files = load_settings(
        data_dir=tmp_path, portal_codes_tls_ca=test_pki / "ca.pem",
        portal_codes_tls_cert=test_pki / "portal.pem", portal_codes_tls_key=test_pki / "portal.key",
    )  # fmt: skip
    server_only = load_settings(data_dir=tmp_path, portal_codes_tls_ca=test_pki / "ca.pem")
    not_an_issuer = load_settings(
        data_dir=tmp_path, portal_codes_tls_ca=test_pki / "ca.pem",
        portal_codes_tls_cert=test_pki / "api.pem", portal_codes_tls_key=test_pki / "api.key",
    )  # fmt: skip
    clients = [
        IssuerClient(address, token, 5.0, issuer_channel_credentials(plane)),
        IssuerClient(address, token, 5.0, issuer_channel_credentials(files)),
        IssuerClient(address, token, 2.0, issuer_channel_credentials(server_only)),  # no client certificate
        IssuerClient(address, token, 2.0, issuer_channel_credentials(not_an_issuer)),  # PERMISSION_DENIED
        IssuerClient(address, token, 2.0, None),  # plain text
    ]
    try:
        for client in clients[:2]:
            code = await client.issue_short()
            assert len(code.code) == 6
        for client in clients[2:]:
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
        ({}, "robert certs init"),  # no ROBERT_PORTAL_CODES_TLS_*, and no certificate of the plane
    ]
    for values, message in cases:
        with pytest.raises(SettingsError, match=message):
            issuer_channel_credentials(load_settings(data_dir=tmp_path, **values))
