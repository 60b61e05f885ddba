"""Fixtures every test package may use: store URLs on SQLite and on a real PostgreSQL.

- `postgres_server` (session): one throwaway PostgreSQL server for the whole run.
- `postgres_url`: a fresh, empty PostgreSQL database for one test, as a SQLAlchemy URL.
- `store_url`: parametrized over `sqlite` (a real file under tmp_path) and `postgresql`,
  so a test that takes it runs once per backend.

If PostgreSQL cannot be started the tests that need it fail with the reason; set
INTERLINK_TEST_NO_POSTGRES=1 to skip them instead (SQLite-only run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import (
    NO_POSTGRES_ENV,
    PostgresServer,
    PostgresUnavailable,
    postgres_disabled,
    store_url_for,
)

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The run's PostgreSQL server, stopped and removed at the end of the session."""
    if postgres_disabled():
        pytest.skip(f"{NO_POSTGRES_ENV}=1: PostgreSQL left out of this run")
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        pytest.fail(f"could not start the PostgreSQL test server: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database for this test (dropped afterwards)."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL, once on SQLite (a real file) and once on PostgreSQL."""
    return store_url_for(request.param, request, tmp_path)
