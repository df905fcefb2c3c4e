"""Alembic's entry point for comfyfleet's database.

Run three ways, all with the same options (`runner.CONTEXT_OPTIONS`):
- by `init_db` / `comfyfleet db ...`, which pass an open connection (already holding the migration lock)
  in `config.attributes["connection"]`;
- by the plain `alembic` command with the repository's `alembic.ini`: the URL is `sqlalchemy.url` when
  given (`alembic -x` is not needed), else the project's own setting (`DATABASE_URL` / `DATA_DIR`);
- offline (`alembic upgrade head --sql`): SQL for a DBA to review, nothing executed.
"""

from __future__ import annotations

import asyncio

from alembic import context

from app.db import all_tables
from app.migrations.runner import CONTEXT_OPTIONS, locked_connection

config = context.config
target_metadata = all_tables()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.config import get_settings

    return get_settings().effective_database_url


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, **CONTEXT_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    async with locked_connection(url) as conn:
        await conn.run_sync(_run)
        await conn.commit()


if context.is_offline_mode():
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **CONTEXT_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    asyncio.run(_run_online(_url()))
