"""``python -m bench fuzz`` on a document with an operation schemathesis cannot read: the operation is a
problem found, the run goes on with the others (it used to stop on ``.ok()`` of an ``Err``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.bench_fuzz import run_fuzz
from robert_server.api.app import PREFIX

DOCUMENT = """\
openapi: 3.0.3
info: {title: one operation defined, one not, version: "1"}
paths:
  /gone:
    $ref: "missing.yaml#/paths/gone"
  /here:
    get:
      responses:
        "204": {description: nothing to say}
"""


class _Here(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(204 if self.path == PREFIX + "/here" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def here_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Here)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreadable_operation_is_a_problem_and_the_others_still_run(here_url: str, tmp_path: Path) -> None:
    document = tmp_path / "openapi.yaml"
    document.write_text(DOCUMENT)
    result = run_fuzz(here_url, examples=3, document=document)
    assert len(result.problems) == 1, result.problems
    assert result.problems[0].startswith("/gone: Unresolvable reference in the schema; "), result.problems
    assert "missing.yaml#/paths/gone" in result.problems[0]
    assert result.statuses == {204: result.cases} and result.cases >= 1
