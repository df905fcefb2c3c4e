"""The schema is owned by the Alembic migrations, on SQLite and PostgreSQL alike: they equal the models,
bring any database to head (fresh, made by create_all before migrations, or behind), take turns when several
processes start at once, and fail whole, with a message that says what to do."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from asyncio.subprocess import PIPE, STDOUT
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from filelock import FileLock
from sqlalchemy import inspect, text
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from app.cli import cli
from app.db import all_tables, init_db, make_engine, make_sessionmaker, sqlite_path
from app.jobs.repo import JobRepo
from app.migrations import runner
from app.migrations.runner import (
    BASELINE_TABLES,
    CONTEXT_OPTIONS,
    PG_LOCK_KEY,
    MigrationError,
    current_revisions,
    head_revisions,
    upgrade,
)

pytestmark = pytest.mark.usefixtures("database")  # every test runs on SQLite and on PostgreSQL
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "db"
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


async def _run_sql(url: str, sql: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for stmt in (s.strip() for s in sql.split(";")):
                body = "\n".join(line for line in stmt.splitlines() if not line.startswith("--")).strip()
                if body:
                    await conn.exec_driver_sql(body)
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _revisions(url: str) -> tuple[str, ...]:
    engine = make_engine(url)
    try:
        return await current_revisions(engine)
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(database):
    """Fails when a model changed without a revision: run `comfyfleet db revision -m "..."` (README)."""
    engine = make_engine(database.url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts=CONTEXT_OPTIONS), all_tables())
            )
    finally:
        await engine.dispose()
    assert diff == [], f"models differ from the migrations; add a revision (comfyfleet db revision): {diff}"


def test_revisions_form_one_line_with_one_head():
    script = runner.script_directory()
    assert len(script.get_heads()) == 1, "two revisions claim the same parent: renumber one (down_revision)"
    assert len(script.get_bases()) == 1


async def test_fresh_database_is_migrated_to_head(blank):
    engine = make_engine(blank.url)
    try:
        await init_db(engine)
        assert await current_revisions(engine) == head_revisions()
        again = await upgrade(engine)  # a second start finds nothing to do
        assert again == (head_revisions(), head_revisions())
    finally:
        await engine.dispose()
    assert BASELINE_TABLES <= await _tables(blank.url)


async def test_database_made_by_create_all_before_migrations_is_adopted_with_its_rows(blank):
    await _run_sql(blank.url, (FIXTURES / f"pre_migrations_{blank.kind}.sql").read_text())
    await _run_sql(
        blank.url,
        """INSERT INTO jobs (id, state, progress, workflow, request, timings, attempts, webhook_attempts,
                             cancel_requested, created_at, updated_at, cost_usd)
           VALUES ('job_old', 'succeeded', 1.0, 'w', '{"prompt": "old"}', '{}', 0, 0, false, 1.0, 2.0, 0.25);
           INSERT INTO instances (label, id, provider, state, price_per_hour, comfy_dir, created_at,
                                  simulated, updated_at)
           VALUES ('comfyfleet-t-1', '77', 'vast', 'ready', 0.4, '/w', 1.0, false, 1.0);
           INSERT INTO cleanup_actions (at, kind, target, reason, dry_run, ok)
           VALUES (1.0, 'idle_instance', '77', 'idle', false, true)""",
    )
    engine = make_engine(blank.url)
    try:
        await init_db(engine)
        assert await current_revisions(engine) == head_revisions()
        repo = JobRepo(make_sessionmaker(engine))
        old = await repo.require("job_old")
        assert (old.state, old.request, old.cost_usd, old.submitted_by) == (
            "succeeded",
            {"prompt": "old"},
            0.25,
            None,
        )
        new = await repo.create(workflow="w", request={}, submitted_by="ci")
        assert (await repo.require(new.id)).submitted_by == "ci"
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM instances"))).scalar() == 1
            assert (await conn.execute(text("SELECT count(*) FROM cleanup_actions"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_database_with_only_some_of_our_tables_is_not_adopted(blank):
    await _run_sql(blank.url, "CREATE TABLE jobs (id VARCHAR(40) PRIMARY KEY)")
    engine = make_engine(blank.url)
    try:
        with pytest.raises(MigrationError, match="cleanup_actions, instances") as exc:
            await init_db(engine)
        assert "empty database" in str(exc.value)
        assert await current_revisions(engine) == ()
    finally:
        await engine.dispose()


async def test_database_migrated_by_a_newer_comfyfleet_is_refused(database):
    await _run_sql(database.url, "UPDATE alembic_version SET version_num = '9999'")
    engine = make_engine(database.url)
    try:
        with pytest.raises(MigrationError, match=r"9999.*newer"):
            await init_db(engine)
    finally:
        await engine.dispose()


async def test_failed_migration_leaves_the_schema_as_it_was(database, tmp_path, monkeypatch):
    scripts = tmp_path / "migrations"
    shutil.copytree(runner.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    head = head_revisions()[0]
    (scripts / "versions" / "9001_breaks_halfway.py").write_text(
        f'''"""Adds a column, then fails."""
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("half_done", sa.Integer(), nullable=True))
    op.create_table("half_table", sa.Column("id", sa.Integer(), primary_key=True))
    raise RuntimeError("this migration breaks halfway")


def downgrade():
    pass
'''
    )
    monkeypatch.setattr(runner, "MIGRATIONS_DIR", scripts)
    runner.script_directory.cache_clear()
    engine = make_engine(database.url)
    try:
        with pytest.raises(RuntimeError, match="breaks halfway"):
            await init_db(engine)
        assert await current_revisions(engine) == (head,)
        async with engine.connect() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("jobs")})
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "half_done" not in columns and "half_table" not in tables
    finally:
        await engine.dispose()
        runner.script_directory.cache_clear()


async def test_several_processes_starting_at_once_migrate_once(blank):
    env = {**os.environ, "DATABASE_URL": blank.url}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "db", "upgrade", env=env, stdout=PIPE, stderr=STDOUT
        )
        for _ in range(3)
    ]
    outputs = []
    for proc in procs:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode(errors="replace")
        outputs.append(out.decode(errors="replace"))
    migrated = [o for o in outputs if f"empty -> {head_revisions()[0]}" in o]
    assert len(migrated) == 1, outputs  # the others waited for the lock and found the schema current
    assert await _revisions(blank.url) == head_revisions()


async def test_migration_lock_held_elsewhere_times_out_with_a_clear_message(blank):
    holder = make_engine(blank.url, poolclass=NullPool)  # closing its connection ends the session
    engine = make_engine(blank.url)
    try:
        if blank.kind == "postgresql":
            conn = await holder.connect()
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            await conn.commit()
            release = conn.close
        else:
            lock = FileLock(f"{sqlite_path(blank.url)}.migrate.lock", thread_local=False)
            lock.acquire()

            async def release() -> None:
                lock.release()

        started = time.monotonic()
        try:
            with pytest.raises(MigrationError, match="migration lock") as exc:
                await upgrade(engine, lock_timeout_s=0.5)
        finally:
            await release()
        assert "start again" in str(exc.value) and time.monotonic() - started < 60
        await upgrade(engine)  # released: the next start migrates
        assert await current_revisions(engine) == head_revisions()
    finally:
        await engine.dispose()
        await holder.dispose()


async def test_unreachable_database_is_a_clear_retryable_error_without_the_password():
    engine = make_engine("postgresql+asyncpg://comfyfleet:s3cret-pw@127.0.0.1:9/none")
    try:
        with pytest.raises(MigrationError, match="cannot connect to the database") as exc:
            await init_db(engine)
    finally:
        await engine.dispose()
    assert exc.value.retryable and "s3cret-pw" not in str(exc.value) and "***" in str(exc.value)


# --- the `comfyfleet db` commands ----------------------------------------------------------------
def test_db_current_check_exits_1_on_a_database_behind_the_code(blank, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", blank.url)
    res = CliRunner().invoke(cli, ["db", "current", "--check"])
    assert res.exit_code == 1 and "behind" in res.output, res.output
    res = CliRunner().invoke(cli, ["db", "upgrade", "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["db", "current", "--check"])
    assert res.exit_code == 0 and "up to date" in res.output, res.output


def test_db_revision_writes_the_next_numbered_revision(tmp_path, monkeypatch):
    """With no model change, autogenerate writes an empty revision (another view of the agreement test)."""
    import app.migrations.cli as db_cli

    scripts = tmp_path / "migrations"
    shutil.copytree(runner.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runner, "MIGRATIONS_DIR", scripts)
    monkeypatch.setattr(db_cli, "MIGRATIONS_DIR", scripts)
    runner.script_directory.cache_clear()
    before = head_revisions()[0]
    try:
        res = CliRunner().invoke(cli, ["db", "revision", "-m", "nothing changed"])
        assert res.exit_code == 0, res.output
        written = sorted((scripts / "versions").glob("*_nothing_changed.py"))
        assert [p.name for p in written] == [f"{int(before) + 1:04d}_nothing_changed.py"], res.output
        body = written[0].read_text()
        assert f'down_revision: str | Sequence[str] | None = "{before}"' in body
        assert "op." not in body.split("def upgrade")[1]  # nothing to do: the models equal the migrations
    finally:
        runner.script_directory.cache_clear()
