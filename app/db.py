"""The service's database: one SQLAlchemy async engine, SQLite by default, Postgres-ready.

Tables live next to the room that owns them (`app.pool.ledger` for instances, `app.jobs.models` for
jobs) and all share this `Base`, so `init_db` creates everything in one place.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


def make_engine(url: str) -> AsyncEngine:
    """Create the engine; for SQLite, make the file's folder and turn on WAL so readers never block."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def init_db(engine: AsyncEngine) -> None:
    """Create every table of every room (imports register them on `Base.metadata`)."""
    # Importing the rooms' table modules registers their tables on Base.metadata.
    for module in ("app.jobs.models", "app.jobs.groups", "app.pool.ledger"):
        importlib.import_module(module)

    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
