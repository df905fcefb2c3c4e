"""Root test configuration. Room-specific fixtures live in tests/<room>/conftest.py and tests/support/.

The database: a test (or a whole module, with `pytestmark = pytest.mark.usefixtures("database")`) that
asks for the `database` fixture runs once per database kind chosen with `--db` (default: both
`sqlite,postgresql`; `COMFYFLEET_TEST_DB` sets the default). The fixture points `DATABASE_URL` at a fresh
database already migrated to head, so everything the test builds from settings (services, CLI commands,
`comfyfleet` subprocesses) uses it. Tests that never touch the database are not run twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
DB_KINDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default=os.environ.get("COMFYFLEET_TEST_DB", ",".join(DB_KINDS)),
        help="comma-separated databases the database tests run on: sqlite, postgresql (default both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames:
        kinds = [k.strip() for k in metafunc.config.getoption("--db").split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(DB_KINDS))
        if unknown or not kinds:
            raise pytest.UsageError(f"--db: unknown database kind {unknown}; use {', '.join(DB_KINDS)}")
        metafunc.parametrize("database", kinds, indirect=True)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No test reads the developer's .env or real credentials; each gets its own data dir."""
    for var in (
        "VAST_API_KEY",
        "R2_ACCOUNT_ID",
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
        "R2_BUCKET",
        "HF_TOKEN",
        "API_TOKEN",
        "API_TOKENS",
        "DATABASE_URL",
        "MODEL_MIRROR_URL",
        "WORKFLOWS_DIR",
        "COMFYFLEET_SERVER",
        "COMFYFLEET_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # so a stray .env in the repo is not picked up
    from app.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- databases -----------------------------------------------------------------------------------
def migrate(url: str) -> None:
    """Migrate `url` to head, on a private event loop in another thread (never the running test's)."""
    from app.db import init_db, make_engine

    async def go() -> None:
        engine = make_engine(url)
        try:
            await init_db(engine)
        finally:
            await engine.dispose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result(120)


@dataclass(frozen=True)
class TestDatabase:
    kind: str  # "sqlite" | "postgresql"
    url: str  # SQLAlchemy async URL of a fresh database, migrated to head

    __test__ = False  # not a test class, whatever its name


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (skipped with a reason when it is not installed)."""
    from tests.support.postgres import PostgresServer, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer.start()
    try:
        server.template = server.make_template(migrate)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "comfyfleet.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def database(request: pytest.FixtureRequest, monkeypatch, tmp_path) -> TestDatabase:
    """A fresh database at head for this test, of the kind this test instance is parametrised with; set
    as DATABASE_URL for everything the test builds from settings."""
    kind = request.param
    if kind == "sqlite":
        path = tmp_path / "data" / "comfyfleet.db"  # where DATA_DIR puts it by default
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = server.create_database(template=server.template)
        request.addfinalizer(lambda: server.drop_database(name))
        url = server.url(name)
    monkeypatch.setenv("DATABASE_URL", url)
    from app.config import get_settings

    get_settings.cache_clear()
    return TestDatabase(kind, url)
