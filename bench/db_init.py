"""What `init_db` (run by every `serve`, `generate`, `cleanup`) costs: python bench/db_init.py

For SQLite and a throwaway local PostgreSQL server (Debian's package, started as the tests start it), side
by side: migrating an empty database to head, and the check on a database already at head (what every
start after the first pays), p50 and max of 20.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import init_db, make_engine
from tests.support.postgres import PostgresServer


async def measure(new_url) -> tuple[list[float], list[float]]:
    fresh, current = [], []
    for _ in range(5):
        engine = make_engine(new_url())
        t = time.perf_counter()
        await init_db(engine)
        fresh.append(time.perf_counter() - t)
        for _ in range(4):
            t = time.perf_counter()
            await init_db(engine)
            current.append(time.perf_counter() - t)
        await engine.dispose()
    return fresh, current


def report(kind: str, fresh: list[float], current: list[float]) -> None:
    print(
        f"{kind:10}: empty -> head p50 {statistics.median(fresh) * 1000:6.1f} ms "
        f"(max {max(fresh) * 1000:.1f}); "
        f"already at head p50 {statistics.median(current) * 1000:5.2f} ms (max {max(current) * 1000:.2f})"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        n = iter(range(10**6))
        await measure(lambda: f"sqlite+aiosqlite:///{tmp}/warmup.db")  # imports, script directory
        report("sqlite", *await measure(lambda: f"sqlite+aiosqlite:///{tmp}/{next(n)}.db"))
    server = PostgresServer.start()
    try:
        report("postgresql", *await measure(lambda: server.url(server.create_database(prefix="bench"))))
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
