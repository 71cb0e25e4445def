"""Federation settings and commands: partners from JSON, clear errors for what is missing or wrong."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.settings import SettingsError, load_settings
from robert_server.cli import main
from robert_server.federation import received


def test_partners_come_from_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    partners = [{"country_code": 34, "endpoint": "127.0.0.1:51060", "ca": str(tmp_path / "de.pem")}]
    monkeypatch.setenv("ROBERT_FEDERATION_PARTNERS", json.dumps(partners))
    (p,) = load_settings().federation_partners
    assert (p.country_code, p.endpoint, p.ca, p.label) == (34, "127.0.0.1:51060", tmp_path / "de.pem", "0x22")


@pytest.mark.parametrize(
    ("partners", "message"),
    [
        ([{"country_code": 34, "endpoint": "a:1", "ca": "x"}] * 2, "a country code appears twice"),
        ([{"country_code": 300, "endpoint": "a:1", "ca": "x"}], "less than or equal to 255"),
        ([{"country_code": 34, "ca": "x"}], "Field required"),
        ([{"country_code": 34, "endpoint": "a:1", "ca": "x", "cert": "y"}], "Extra inputs are not permitted"),
    ],
)
def test_bad_partners_are_refused_with_a_message(
    monkeypatch: pytest.MonkeyPatch, partners: list[dict[str, object]], message: str
) -> None:
    monkeypatch.setenv("ROBERT_FEDERATION_PARTNERS", json.dumps(partners))
    with pytest.raises(SettingsError, match="ROBERT_FEDERATION_PARTNERS") as e:
        load_settings()
    assert message in str(e.value)


def test_the_commands_say_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROBERT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ROBERT_MONGODB_URI", "mongodb://127.0.0.1:1")
    assert main(["federation", "forward", "--once"]) == 2
    assert "ROBERT_FEDERATION_PARTNERS: no partner is configured" in capsys.readouterr().err
    partners = [{"country_code": 34, "endpoint": "127.0.0.1:1", "ca": str(tmp_path / "de.pem")}]
    monkeypatch.setenv("ROBERT_FEDERATION_PARTNERS", json.dumps(partners))
    assert main(["federation", "serve"]) == 2
    assert "ROBERT_FEDERATION_TLS_CERT and ROBERT_FEDERATION_TLS_KEY are needed" in capsys.readouterr().err
    assert main(["federation", "dev-cert", "--country", "0x21", "--dir", str(tmp_path / "pki")]) == 0
    assert main(["federation", "dev-cert", "--country", "0x21", "--dir", str(tmp_path / "pki")]) == 2
    assert main(["federation", "dev-cert", "--country", "fr", "--dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "federation certificates exist" in err and "--country: a country code" in err
    assert (tmp_path / "pki" / "federation.key").stat().st_mode & 0o777 == 0o600


async def test_received_batches_are_forgotten_after_the_retention_period(db: AsyncDatabase) -> None:
    now = dt.datetime(2024, 6, 3, tzinfo=dt.UTC)
    for i, age in enumerate([1, 14, 16, 30]):
        key = received.record_id(0x22, f"b{i}")
        assert await received.begin(db, key, b"d", 1, now - dt.timedelta(days=age)) is received.Begun.NEW
    assert await received.purge(db, now - dt.timedelta(days=15), page=2) == 2
    left = [d["_id"] async for d in received.collection(db).find({})]
    assert sorted(left) == ["22/b0", "22/b1"]
