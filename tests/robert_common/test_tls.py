"""robert_common.tls: rights, plaintext only on loopback, the development PKI, the phone API's TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from robert_common import tls
from robert_common.settings import SettingsError, load_settings


def test_rights_are_per_identity_and_method() -> None:
    rights = tls.MethodRights("pkg.Svc", {"api": ("A", "B"), "issuer-*": ("C",)})
    assert rights.allows("api", "/pkg.Svc/A") and rights.allows("api", "/pkg.Svc/B")
    assert not rights.allows("api", "/pkg.Svc/C")
    assert rights.allows("issuer-lab", "/pkg.Svc/C") and not rights.allows("issuer-lab", "/pkg.Svc/A")
    assert not rights.allows("apix", "/pkg.Svc/A")  # exact names unless a pattern says otherwise
    assert not rights.allows("api", "/other.Svc/A")
    assert not rights.allows(None, "/pkg.Svc/A") and not rights.allows("", "/pkg.Svc/A")


@pytest.mark.parametrize(
    ("addresses", "ok"),
    [
        (("127.0.0.1:1", "localhost:2", "[::1]:3"), True),
        (("127.0.0.1:1", "0.0.0.0:2"), False),
        (("10.0.0.5:50051",), False),
        (("crypto.internal:50051",), False),
    ],
)
def test_plaintext_only_on_loopback(tmp_path: Path, addresses: tuple[str, ...], ok: bool) -> None:
    settings = load_settings(data_dir=tmp_path, grpc_plaintext=True)
    if ok:
        assert tls.check_plaintext(settings, *addresses) is True
    else:
        with pytest.raises(SettingsError, match="ROBERT_GRPC_PLAINTEXT"):
            tls.check_plaintext(settings, *addresses)
    assert tls.check_plaintext(load_settings(data_dir=tmp_path), "10.0.0.5:1") is False  # TLS: no check


def test_development_pki(tmp_path: Path) -> None:
    created = tls.ensure_dev_certs(tmp_path)
    assert created == ["ca", "crypto", "codes", "api", "matcher", "seed", "portal"]
    assert tls.ensure_dev_certs(tmp_path) == []  # first start only
    for key in tmp_path.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    with pytest.raises(FileExistsError):
        tls.init_ca(tmp_path)
    tls.issue(tmp_path, "old", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    listed = {c.name: c for c in tls.list_certs(tmp_path)}
    assert listed["ca"].is_ca and not listed["api"].is_ca
    assert listed["api"].subject == "api" and not listed["api"].expired()
    assert listed["old"].expired()
    with pytest.raises(ValueError):
        tls.issue(tmp_path, "../evil")
    files = tls.files_for(load_settings(data_dir=tmp_path.parent, grpc_tls_dir=tmp_path), "matcher")
    assert (files.ca, files.cert, files.key) == (
        tmp_path / "ca.pem",
        tmp_path / "matcher.pem",
        tmp_path / "matcher.key",
    )


def test_certs_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from robert_server.cli import main

    monkeypatch.setenv("ROBERT_DATA_DIR", str(tmp_path))
    assert main(["certs", "list"]) == 1
    assert main(["certs", "issue", "issuer-lab"]) == 1  # no CA yet
    assert main(["certs", "init"]) == 0
    assert main(["certs", "init"]) == 1  # never replaces a CA
    assert main(["certs", "issue", "issuer-lab", "--days", "30"]) == 0
    assert main(["certs", "issue", "Bad Name"]) == 1
    capsys.readouterr()
    assert main(["certs", "list"]) == 0
    out = capsys.readouterr().out
    assert "issuer-lab" in out and "29 days left" in out and "BEGIN" not in out
    assert (tmp_path / "tls" / "issuer-lab.key").stat().st_mode & 0o777 == 0o600


# --- the phone API's own TLS -------------------------------------------------------------------------


async def _handshake(port: int, version: ssl.TLSVersion) -> str:
    """The TLS version a client limited to ``version`` negotiates, or raises ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old protocols at all
    context.minimum_version = context.maximum_version = version
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    negotiated = writer.get_extra_info("ssl_object").version()
    writer.close()
    return str(negotiated)


async def _serve(context: ssl.SSLContext) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_phone_api_tls_accepts_1_2_and_1_3_only(tmp_path: Path) -> None:
    tls.init_ca(tmp_path)
    cert, key = tls.issue(tmp_path, "api")
    context = tls.http_ssl_context(load_settings(data_dir=tmp_path, http_tls_cert=cert, http_tls_key=key))
    assert context is not None
    # control: this client does speak TLS 1.1 to a server that allows it
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lax.minimum_version = ssl.TLSVersion.TLSv1
    lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    lax.load_cert_chain(cert, key)
    runner, port = await _serve(lax)
    try:
        assert await _handshake(port, ssl.TLSVersion.TLSv1_1) == "TLSv1.1"
    finally:
        await runner.cleanup()
    runner, port = await _serve(context)
    try:
        assert await _handshake(port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        assert await _handshake(port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
            with pytest.raises((ssl.SSLError, ConnectionError)):  # refused in the handshake
                await _handshake(port, old)
    finally:
        await runner.cleanup()


def test_phone_api_tls_settings_are_checked(tmp_path: Path) -> None:
    assert tls.http_ssl_context(load_settings(data_dir=tmp_path)) is None
    with pytest.raises(SettingsError, match="go together"):
        tls.http_ssl_context(load_settings(data_dir=tmp_path, http_tls_cert=tmp_path / "c.pem"))
    with pytest.raises(SettingsError, match="ROBERT_HTTP_TLS_CERT"):
        tls.http_ssl_context(
            load_settings(
                data_dir=tmp_path, http_tls_cert=tmp_path / "c.pem", http_tls_key=tmp_path / "k.pem"
            )
        )
