"""MongoDB access: one client factory, and the embedded SecantusDB server for development and tests.

SecantusDB (GPL-2.0-only) is never imported: it runs as its own server process (``python -m secantus``)
and we talk to it over the MongoDB wire protocol like any ``mongod``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from pymongo import AsyncMongoClient, MongoClient, WriteConcern, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from robert_common.files import open_private_append
from robert_common.settings import Settings, SettingsError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Ids per ``$in``: its cost grows with the square of the list on SecantusDB (1 000 ids: 2 s in one $in,
# 0.2 s in chunks of 25), and a chunk of a few dozen ids costs a real MongoDB nothing noticeable.
IN_CHUNK = 25
IN_FLIGHT = 4  # chunks read at once by find_by_ids


def id_chunks(ids: Sequence[T], size: int = IN_CHUNK) -> list[list[T]]:
    """``ids`` in lists of at most ``size``: every ``$in`` over ids goes through this."""
    return [list(ids[k : k + size]) for k in range(0, len(ids), size)]


async def find_by_ids(
    coll: AsyncCollection,
    ids: Sequence[Any],
    projection: dict[str, Any] | None = None,
    *,
    also: dict[str, Any] | None = None,
    in_flight: int = IN_FLIGHT,
) -> list[dict[str, Any]]:
    """The documents whose ``_id`` is in ``ids`` (and that match ``also``): ``{_id: {$in: chunk}, **also}``
    reads of :data:`IN_CHUNK` ids, ``in_flight`` at a time. ``_id`` comes first: the shard key of the
    sharded collections, and the field SecantusDB's planner tries first."""
    chunks = id_chunks(ids)
    if not chunks:
        return []
    gate = asyncio.Semaphore(in_flight)

    async def read(chunk: list[Any]) -> list[dict[str, Any]]:
        async with gate:
            return await coll.find({"_id": {"$in": chunk}, **(also or {})}, projection).to_list()

    if len(chunks) == 1:
        return await read(chunks[0])
    return [doc for docs in await asyncio.gather(*(read(c) for c in chunks)) for doc in docs]


def mongo_client(
    uri: str, *, timeout_ms: int = 5000, listeners: Sequence[monitoring.CommandListener] = ()
) -> AsyncMongoClient:
    """The async client every component uses. Short timeouts: a slow database gives a clear error.
    ``listeners``: command listeners (tests and benchmarks watch the queries and count round trips)."""
    return AsyncMongoClient(
        uri,
        event_listeners=list(listeners),
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30_000),
        uuidRepresentation="standard",
        tz_aware=True,
    )


def durable(coll: AsyncCollection) -> AsyncCollection:
    """``coll`` with ``j: true`` added to its write concern, for the writes whose success is told to someone
    outside the system: a phone's registration, report, unregistration, a code handed to a doctor. Without
    it the database acknowledges a write before its journal reaches the disk (or, for SecantusDB, even the
    operating system), and a database killed right after loses the last milliseconds of acknowledged
    writes (tests/robert_common/test_durable_writes.py). Writes only the system itself relies on need no
    more: what a crash loses is always the end of the journal, and those writes are re-run (matching)."""
    return coll.with_options(write_concern=WriteConcern(**{**coll.write_concern.document, "j": True}))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


CRUD_COMMANDS = frozenset(
    {"find", "insert", "update", "delete", "findAndModify", "aggregate", "count", "distinct", "getMore"}
)


class CommandRecorder(monitoring.CommandListener):
    """Records the CRUD commands a client sends while ``active``: ``(name, collection, command)``.
    What the query-shape test checks and the benchmarks count (database round trips per operation)."""

    def __init__(self) -> None:
        self.active = False
        self.commands: list[tuple[str, str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active and event.command_name in CRUD_COMMANDS:
            name = event.command_name
            target = event.command.get("collection") if name == "getMore" else event.command.get(name)
            self.commands.append((name, str(target), dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The commands recorded so far, forgotten."""
        out, self.commands = self.commands, []
        return out


class EmbeddedMongoError(RuntimeError):
    pass


class EmbeddedMongo:
    """Starts SecantusDB on 127.0.0.1 with its data in ``data_dir``; ``stop()`` ends it.

    Use as a context manager or call start()/stop(). ``data_dir=None`` keeps the data in memory
    (a temporary folder the server removes on exit): what the test suite uses.
    """

    def __init__(self, data_dir: Path | None, *, port: int = 0, startup_timeout: float = 60.0) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> str:
        if shutil.which(sys.executable) is None:  # pragma: no cover - defensive
            raise EmbeddedMongoError("no Python interpreter to run SecantusDB")
        storage = ":memory:"
        log_target: int | IO[bytes] = subprocess.DEVNULL
        if self.data_dir is not None:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            storage = str(self.data_dir / "db")
            log_fd = open_private_append(self.data_dir / "secantusdb.log")
            self._log = log_target = os.fdopen(log_fd, "ab")
        cmd = [
            sys.executable, "-m", "secantus",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--storage-path", storage, "--log-level", "WARNING",
            # Standalone, not its default one-node replica set: PyMongo then sends no retryable-write
            # transaction numbers, whose bookkeeping SecantusDB re-sorts on every write (81 % of its
            # CPU past 10 000 writes). The project uses no change streams and no transactions.
            "--standalone",
        ]  # fmt: skip
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_target, stderr=log_target,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, umask=0o077,  # its files: owner only
            )  # fmt: skip
        except OSError as e:
            raise EmbeddedMongoError(f"cannot start SecantusDB: {e}") from None
        self._wait_ready()
        log.info("embedded database ready", extra={"port": self.port})
        return self.uri

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        client: MongoClient = MongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise EmbeddedMongoError(
                        "SecantusDB exited at start-up (is the 'embedded' extra installed? "
                        "is its data folder used by another server?)"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise EmbeddedMongoError("SecantusDB did not answer in time") from None
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        if self._log is not None:
            self._log.close()  # the server process keeps its own copy of the descriptor
            self._log = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedMongo:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def require_uri(settings: Settings, command: str) -> str:
    """The database URI of the settings, or a clear error naming the command that needs it."""
    if not settings.mongodb_uri:
        raise SettingsError(
            f"ROBERT_MONGODB_URI must be set for `{command}` (or run it beside `robert up`, "
            "which publishes its embedded database)"
        )
    return settings.mongodb_uri


@contextlib.asynccontextmanager
async def open_database(
    settings: Settings, command: str, name: str | None = None
) -> AsyncIterator[AsyncDatabase]:
    """The component's database (``name`` or ROBERT_MONGODB_DATABASE), its client closed on exit."""
    client = mongo_client(require_uri(settings, command))
    try:
        yield client[name or settings.mongodb_database]
    finally:
        await client.close()


@contextlib.contextmanager
def database_uri() -> Iterator[str]:
    """ROBERT_MONGODB_URI when set, else an in-memory embedded server for as long as the block runs
    (what the test suite and the benchmarks use)."""
    uri = os.environ.get("ROBERT_MONGODB_URI")
    if uri:
        yield uri
        return
    with EmbeddedMongo(None) as server:
        yield server.uri
