"""The store on both of its backends: the embedded SQLite and a real PostgreSQL.

``store_url`` is parametrized: ``sqlite`` (None: the SQLite file in the state
directory) and ``postgres`` (a fresh database on the session's loopback cluster
from :mod:`tests.support.postgres`, marked ``real``). Tests and fixtures that
exercise the store take it, so the whole store suite runs on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.store import Store, open_store

if TYPE_CHECKING:  # imported by pytest as a plugin of its own (conftest)
    from tests.support.postgres import PostgresServer


def postgres_url(server: PostgresServer, database: str) -> str:
    """A ``postgresql://`` URL for ``database`` as the superuser (what ``store.url`` takes)."""
    return f"postgresql://{server.superuser}:{server.password}@{server.host}:{server.port}/" \
           f"{database}?connect_timeout=5"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.real)])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None on SQLite; a new, empty PostgreSQL database's URL on PostgreSQL."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return postgres_url(server, server.create_database())


def store_yaml(url: str | None) -> str:
    """The config lines that point an agent at ``url`` ("" for SQLite)."""
    return "" if url is None else f'\nstore: {{url: "{url}", lease: 3s}}\n'


def open_test_store(state_dir: Path, url: str | None, **kwargs: bool) -> Store:
    return open_store(state_dir, url=url, **kwargs)
