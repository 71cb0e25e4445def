"""Logged exceptions show where they came from (frames) and never what they said (issue 10 item 11)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import orjson

from robert_common.logs import JsonFormatter

SECRET = "k_s=0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _open_the_vault(key: str) -> None:
    raise ValueError(f"bad key {key}")


def _handle(key: str) -> None:
    try:
        _open_the_vault(key)
    except ValueError as e:
        raise RuntimeError(f"while handling {key}") from e


def _logged_line(fn) -> dict:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            fn()
        except Exception:
            log.exception("request failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text and "0f1e2d3c" not in text
    return orjson.loads(text)


def test_a_logged_exception_shows_its_frames_but_not_its_message() -> None:
    line = _logged_line(lambda: _open_the_vault(SECRET))
    assert line["exc_type"] == "ValueError"
    frames = line["exc_frames"]
    assert any("test_logs.py" in f and f.endswith(" _open_the_vault") for f in frames)
    assert frames[0].startswith("tests/robert_common/test_logs.py:")  # shortened to the project


def test_causes_are_followed_without_their_messages() -> None:
    line = _logged_line(lambda: _handle(SECRET))
    assert line["exc_type"] == "RuntimeError"
    assert any(f.endswith(" _handle") for f in line["exc_frames"])
    [cause] = line["exc_chain"]
    assert cause["type"] == "ValueError"
    assert any(f.endswith(" _open_the_vault") for f in cause["frames"])


def test_a_real_process_logs_the_frames_of_an_uncaught_bug() -> None:
    """A process set up like every component (setup_logging) logs a failure's frames on stderr."""
    code = f"""
import logging
from robert_common.logs import setup_logging
setup_logging("INFO")
def deep(secret):
    return {{}}[secret]
try:
    deep({SECRET!r})
except KeyError:
    logging.getLogger("robert.test").exception("lookup failed")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert SECRET not in done.stderr
    line = orjson.loads(done.stderr.strip().splitlines()[-1])
    assert line["exc_type"] == "KeyError" and line["exc_frames"][-1].endswith(" deep")
