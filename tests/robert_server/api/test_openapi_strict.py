"""The OpenAPI document is as strict as the server (issue 10 item 8): every value the server refuses
below is refused by the document's schema too (empty strings, base64 of the wrong length or alphabet,
over-long fields), so that a client built from the document never sends what the server will refuse."""

from __future__ import annotations

from typing import Any

import aiohttp
import jsonschema_rs
import pytest
import yaml

from robert_server.api.app import OPENAPI_PATH

DOC = yaml.safe_load(OPENAPI_PATH.read_text())


def schema_accepts(name: str, instance: Any) -> bool:
    return jsonschema_rs.validator_for(
        {"components": DOC["components"], "$ref": f"#/components/schemas/{name}"}
    ).is_valid(instance)


def auth(**changes: Any) -> dict[str, Any]:
    return {"ebid": "AAAAAAAAAAA=", "epochId": 1, "time": "AAAAAA==", "mac": "A" * 43 + "=", **changes}


HELLO = {"timeCollectedOnDevice": 1, "timeFromHelloMessage": 1, "mac": "AAAAAAA=", "rssiCalibrated": -60}


def report(code: str = "ABCDEF", **contact: Any) -> dict[str, Any]:
    return {"token": code, "contacts": [{"ebid": "AAAAAAAAAAA=", "ecc": "AA==", "ids": [HELLO], **contact}]}


REFUSED = [
    ("StatusRequest", "/status", auth(ebid="AAAAAAAAAA!=")),  # right length, not base64
    ("StatusRequest", "/status", auth(time="AAAA")),  # 3 bytes
    ("StatusRequest", "/status", auth(mac="A" * 40 + "A==")),  # 31 bytes
    ("StatusRequest", "/status", auth(pushInfo={"token": "", "locale": "fr", "timezone": "Europe/Paris"})),
    ("UnregisterRequest", "/unregister", auth(pushToken="")),
    ("RegisterRequest", "/register", {"captcha": "", "captchaId": "x", "clientPublicECDHKey": "AAAA"}),
    ("RegisterRequest", "/register", {"captcha": "x", "captchaId": "x", "clientPublicECDHKey": "A" * 300}),
    ("ReportRequest", "/report", report(code="")),
    ("ReportRequest", "/report", report(ecc="AAAA")),  # 3 bytes
    ("ReportRequest", "/report", report(ebid="AAAAAAAAAAAA")),  # 9 bytes
]


@pytest.mark.parametrize(("schema", "path", "body"), REFUSED)
async def test_what_the_server_refuses_the_document_refuses(api_server, schema, path, body) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{api_server.base_url}/api/v6{path}", json=body) as r,
    ):
        assert r.status == 400, await r.text()
    assert not schema_accepts(schema, body)


def test_valid_requests_pass_the_document() -> None:
    assert schema_accepts("StatusRequest", auth())
    assert schema_accepts("ReportRequest", report())
