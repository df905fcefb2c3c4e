"""The service's database: one SQLAlchemy async engine, SQLite by default, PostgreSQL via `DATABASE_URL`.

Tables live next to the room that owns them (`app.pool.ledger` for instances, `app.jobs.models` for
jobs, `app.jobs.groups` for stories and batches) and all share this `Base`. Their shape in a database is
owned by the Alembic migrations in `app/migrations/` (`init_db` upgrades to the newest one); the models and
the migrations are kept equal by a test that fails when autogenerate would find a difference.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sqlalchemy import MetaData, event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

# Every room whose module defines tables; importing them registers the tables on `Base.metadata`.
TABLE_MODULES = (
    "app.jobs.models",
    "app.jobs.groups",
    "app.pool.ledger",
    "app.pool.hosts",
    "app.pool.locks",
    "app.jobs.claims",
)

# Deterministic constraint names, so a later migration can drop or alter a constraint by name on every
# database (SQLite's batch mode needs names too). Index names are SQLAlchemy's default (ix_<table>_<col>).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    # no "pk": primary keys keep the database's own names (PostgreSQL: <table>_pkey), as create_all made
    # them before migrations existed, so adopted and migrated databases are alike
}

# asyncpg: how long to wait for a connection, and for any one statement, before giving up.
PG_CONNECT_TIMEOUT_S = 10.0
PG_COMMAND_TIMEOUT_S = 60.0


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def all_tables() -> MetaData:
    """`Base.metadata` with every room's tables registered on it."""
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return Base.metadata


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def make_engine(url: str, **kw) -> AsyncEngine:
    """Create the engine. SQLite: make the file's folder and turn on WAL so readers never block.
    PostgreSQL (asyncpg): bounded connect and statement times, and a liveness check on checkout."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kw)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql+asyncpg"):
        connect_args = {
            "timeout": PG_CONNECT_TIMEOUT_S,
            "command_timeout": PG_COMMAND_TIMEOUT_S,
            "server_settings": {"application_name": "comfyfleet"},
        }
        return create_async_engine(url, pool_pre_ping=True, connect_args=connect_args, **kw)
    return create_async_engine(url, pool_pre_ping=True, **kw)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def init_db(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema (Alembic `upgrade head`).

    Safe when several processes start at once (they take turns under a lock; see
    `app.migrations.runner`), cheap when it is already current (one read), and a database made by
    `create_all` before migrations existed is adopted without touching its rows."""
    from app.migrations.runner import upgrade

    await upgrade(engine)
