"""Shared fixtures: one real database server for the whole session, a fresh database per test.

With ROBERT_MONGODB_URI set the tests use that server; otherwise they start the embedded SecantusDB
(in memory) and stop it at the end of the session.

Every test that reaches the database (any fixture built on ``mongo_uri``: ``db``, ``crypto_service``,
``api_server``, ``code_issuer``...) or is ``slow`` (starts processes) is marked ``integration`` here, so
``pytest -m "not integration"`` is the fast unit run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from robert_common.mongo import database_uri
from tests.fixtures.database import fresh_database

# Fixtures each component offers to the others' tests (one module per component).
pytest_plugins = ["tests.fixtures.tls", "tests.fixtures.crypto", "tests.fixtures.api", "tests.fixtures.codes"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_database = "mongo_uri" in getattr(item, "fixturenames", ())
        if uses_database or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    with database_uri() as uri:
        yield uri


@pytest.fixture
async def db(mongo_uri: str) -> AsyncIterator[AsyncDatabase]:
    """A fresh, empty database for one test, dropped afterwards."""
    async with fresh_database(mongo_uri) as database:
        yield database
