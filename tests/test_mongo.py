"""The embedded database: started standalone, so writes carry no retryable-write bookkeeping."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pymongo import MongoClient, monitoring

from robert_common.mongo import IN_CHUNK, EmbeddedMongo, id_chunks


class _Inserts(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture(scope="module")
def embedded_uri(mongo_uri: str) -> Iterator[str]:
    """The session's server when it is the embedded one, else an embedded server of our own."""
    if not os.environ.get("ROBERT_MONGODB_URI"):
        yield mongo_uri
        return
    with EmbeddedMongo(None) as server:
        yield server.uri


def test_embedded_database_is_standalone_and_writes_are_not_retryable(embedded_uri: str) -> None:
    listener = _Inserts()
    client: MongoClient = MongoClient(embedded_uri, event_listeners=[listener])
    try:
        hello = client.admin.command("hello")
        assert "setName" not in hello, "the embedded server advertises a replica set: start it --standalone"
        client["t_standalone"]["c"].insert_one({"_id": 1})
        assert listener.commands and "txnNumber" not in listener.commands[0]
    finally:
        client.drop_database("t_standalone")
        client.close()


def test_id_chunks_cut_every_in_to_at_most_in_chunk_ids() -> None:
    ids = list(range(IN_CHUNK * 2 + 3))
    chunks = id_chunks(ids)
    assert [len(c) for c in chunks] == [IN_CHUNK, IN_CHUNK, 3]
    assert [i for c in chunks for i in c] == ids
    assert id_chunks([]) == []
    assert 10 <= IN_CHUNK <= 25
