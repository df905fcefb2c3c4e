"""Fixtures for the schema tests: a blank database of the kind the test is parametrised with."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Blank:
    kind: str
    url: str


@pytest.fixture
def blank(database, request, tmp_path) -> Blank:
    """An empty database (no tables, no migration record) of the same kind as `database`."""
    if database.kind == "sqlite":
        return Blank("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'blank' / 'blank.db'}")
    server = request.getfixturevalue("postgres_server")
    name = server.create_database(prefix="blank")
    request.addfinalizer(lambda: server.drop_database(name))
    return Blank("postgresql", server.url(name))
