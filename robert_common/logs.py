"""JSON logs on stderr, one object a line.

Rule of the house: no key, code, token, EBID, MAC or id_A is ever passed to a logger, not even in
``extra``. Log counts, reasons and durations instead. A logged exception shows its type and frames
(file, line, function), never its message (see :func:`exception_fields`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback

import orjson

_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info and record.exc_info[1] is not None:
            out.update(exception_fields(record.exc_info[1]))
        return orjson.dumps(out, default=str).decode()


MAX_FRAMES = 40  # innermost frames kept per exception
MAX_CHAIN = 5  # causes and contexts followed


def exception_fields(exc: BaseException) -> dict[str, object]:
    """Where an exception came from, without what it said: its type and its frames (file, line,
    function), then the same for the exceptions it was raised from or during.

    Never the message, the source line or any local value: those may quote a key, a code or a request
    body. The frames are enough to find the bug in the source.
    """
    chain: list[dict[str, object]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(current))
        chain.append({"type": _type_name(current), "frames": _frames(current)})
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    fields: dict[str, object] = {"exc_type": chain[0]["type"], "exc_frames": chain[0]["frames"]}
    if len(chain) > 1:
        fields["exc_chain"] = chain[1:]
    return fields


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _frames(exc: BaseException) -> list[str]:
    """``"path:line function"`` per frame, outermost first (paths shortened to the package)."""
    frames = traceback.extract_tb(exc.__traceback__)[-MAX_FRAMES:]
    return [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames]


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    if path.startswith(_ROOT):
        return path[len(_ROOT) :]
    return path


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # access logs carry nothing we need
    logging.getLogger("pymongo").setLevel(logging.WARNING)
