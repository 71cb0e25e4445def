"""``robert codes issue-long|qr|purge`` and ``robert issuers`` through the real command line entry point."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import zoneinfo
from pathlib import Path

import grpc
import pytest
import segno
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.clock import ManualClock
from robert_common.rpc import codes_pb2 as pb
from robert_common.settings import load_settings
from robert_server.cli import main
from robert_server.codes import make_verifier
from robert_server.codes.cli import CSV_HEADER
from tests.fixtures.codes import CODES_PEPPER, CodeIssuerHandle


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, mongo_uri: str, db: AsyncDatabase, tmp_path: Path) -> Path:
    monkeypatch.setenv("ROBERT_MONGODB_URI", mongo_uri)
    monkeypatch.setenv("ROBERT_MONGODB_DATABASE", db.name)
    monkeypatch.setenv("ROBERT_CODES_PEPPER", CODES_PEPPER)
    monkeypatch.setenv("ROBERT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ROBERT_LOG_LEVEL", "WARNING")
    return tmp_path


async def robert(*argv: str) -> int:
    """Run ``robert ARGV`` as the console script does (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(main, list(argv))


def lot_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == CSV_HEADER
    return rows[1:]


def assert_checksum(path: Path) -> None:
    digest, name = path.with_name(path.name + ".sha256").read_text().split()
    assert name == path.name and digest == hashlib.sha256(path.read_bytes()).hexdigest()


async def test_issue_long_writes_a_lot_and_tops_up(cli_env: Path, db: AsyncDatabase) -> None:
    out = cli_env / "lot.csv"
    today = dt.datetime.now(zoneinfo.ZoneInfo("Europe/Paris")).date().isoformat()
    assert await robert("codes", "issue-long", "--count", "5", "--from", today, "--out", str(out)) == 0
    rows = lot_rows(out)
    assert len(rows) == 5 and len({r[1] for r in rows}) == 5 and len({r[4] for r in rows}) == 1
    assert rows[0][0].endswith(f"?code={rows[0][1]}&type=1")
    assert_checksum(out)
    assert out.stat().st_mode & 0o077 == 0  # live codes: readable by the owner only

    # A crash cut the file after 3 codes and half a line: re-running completes it, same lot.
    data = out.read_bytes()
    cut = data.split(b"\n")
    out.write_bytes(b"\n".join(cut[:4]) + b"\n" + cut[4][:10])
    assert await robert("codes", "issue-long", "--count", "5", "--from", today, "--out", str(out)) == 0
    topped = lot_rows(out)
    assert len(topped) == 5 and topped[:3] == rows[:3] and {r[4] for r in topped} == {rows[0][4]}
    assert_checksum(out)
    assert await robert("codes", "issue-long", "--count", "5", "--from", today, "--out", str(out)) == 0
    assert lot_rows(out) == topped  # already complete: nothing added
    assert await db["codes"].count_documents({"lot": rows[0][4]}) == 7  # 5 + 2 orphans of the "crash"

    other_day = (dt.date.fromisoformat(today) + dt.timedelta(days=1)).isoformat()
    assert await robert("codes", "issue-long", "--count", "9", "--from", other_day, "--out", str(out)) == 2
    assert lot_rows(out) == topped

    settings = load_settings()
    clock = ManualClock(dt.datetime.now(dt.UTC).timestamp())
    verifier = make_verifier(db, settings, clock)
    for row in topped:
        assert await verifier.reserve(row[1], "192.0.2.1") is not None


async def test_qr_png_and_svg(cli_env: Path) -> None:
    code = "ab12cd"
    png, svg = cli_env / "code.png", cli_env / "code.svg"
    assert await robert("codes", "qr", code, "--out", str(png)) == 0
    assert await robert("codes", "qr", code, "--out", str(svg)) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    expected = segno.make("https://app.stopcovid.gouv.fr?code=AB12CD&type=2", error="m")
    assert svg.read_text().count("<svg") == 1
    assert expected.designator  # the payload fits a QR code
    from io import BytesIO

    buf = BytesIO()
    expected.save(buf, kind="svg", scale=8)
    assert svg.read_bytes() == buf.getvalue()
    assert png.stat().st_mode & 0o777 == 0o600  # a live code: its owner's only
    svg.chmod(0o644)
    assert await robert("codes", "qr", code, "--out", str(svg)) == 0
    assert svg.stat().st_mode & 0o777 == 0o600  # also over an existing file
    assert await robert("codes", "qr", "not-a-code", "--out", str(png)) == 2
    assert await robert("codes", "qr", code, "--out", str(cli_env / "code.gif")) == 2


async def test_issuers_add_list_revoke(
    cli_env: Path, code_issuer: CodeIssuerHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await robert("issuers", "add", "prostopcovid") == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    issued = await code_issuer.stub.IssueShortCode(
        pb.IssueShortCodeRequest(), metadata=code_issuer.auth(token)
    )
    assert issued.code
    assert await robert("issuers", "add", "prostopcovid") == 1  # already exists
    capsys.readouterr()
    assert await robert("issuers", "list") == 0
    listing = capsys.readouterr().out
    assert "prostopcovid" in listing and "active" in listing and token not in listing
    assert await robert("issuers", "revoke", "prostopcovid") == 0
    assert await robert("issuers", "revoke", "prostopcovid") == 1
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await code_issuer.stub.IssueShortCode(pb.IssueShortCodeRequest(), metadata=code_issuer.auth(token))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await robert("issuers", "add", "bad name!") == 1


async def test_purge_command(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await robert("codes", "purge") == 0
    assert '"deleted_expired": 0' in capsys.readouterr().out
