"""A real PostgreSQL server on 127.0.0.1 for the tests (Debian's `postgresql` package), per testinfra.md.

One throwaway cluster per test session (`initdb` + `pg_ctl`, about 1.5 s), with durability switched off
(fsync, synchronous commit, full page writes: the data is thrown away anyway). A template database is
migrated to head once; each test gets a fresh database copied from it (`CREATE DATABASE ... TEMPLATE`, about
25 ms), so no test sees another's rows and none pays for migrations. As root, `initdb` and `postgres` run as
the `postgres` user (they refuse to run as root); the unix socket stays in the cluster's own directory.

Administrative statements go through one asyncpg connection owned by a private thread with its own event
loop, so they work from sync fixtures and never touch the loop of the test that is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import asyncpg

USER = "comfyfleet"
START_ATTEMPTS = 5


def bindir() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable_reason() -> str | None:
    if bindir() is None:
        return "PostgreSQL server binaries are missing (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root needs the 'postgres' user to run the server (apt-get install postgresql)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Admin:
    """One superuser connection to the `postgres` database, used from any thread."""

    def __init__(self, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-admin", daemon=True)
        self._thread.start()
        self._conn: asyncpg.Connection = self._call(
            asyncpg.connect(host="127.0.0.1", port=port, user=USER, database="postgres", timeout=10)
        )

    def _call(self, coro, timeout_s: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def execute(self, sql: str) -> None:
        self._call(self._conn.execute(sql))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._conn.close(timeout=5), timeout_s=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


class PostgresServer:
    def __init__(self, root: Path, port: int, proc_user: str | None, bin_dir: Path) -> None:
        self.root, self.port, self._proc_user, self._bin = root, port, proc_user, bin_dir
        self._admin: _Admin | None = None
        self._names = itertools.count(1)
        self.template: str | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = bindir()
        if bin_dir is None:
            raise RuntimeError(unavailable_reason() or "no PostgreSQL")
        # Not under pytest's tmp dir: that is 0700 root, and the server runs as `postgres`.
        root = Path(tempfile.mkdtemp(prefix="comfyfleet-pg-"))
        proc_user = "postgres" if os.geteuid() == 0 else None
        if proc_user:
            pw = pwd.getpwnam(proc_user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        last = ""
        server = None
        try:
            initdb = [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", USER, "--auth=trust"]
            res = subprocess.run(
                [*cls._as(proc_user), *initdb, "-E", "UTF8", "--no-sync", "--locale=C"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if res.returncode != 0:
                raise RuntimeError(f"initdb failed: {res.stderr[-2000:]}")
            for _ in range(START_ATTEMPTS):  # a port picked free can be taken before the server binds it
                port = _free_port()
                options = (
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400 "
                    "-c shared_buffers=32MB"
                )
                pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log")]
                res = subprocess.run(
                    [*cls._as(proc_user), *pg_ctl, "-w", "-t", "60", "-o", options, "start"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if res.returncode == 0:
                    server = cls(root, port, proc_user, bin_dir)
                    server._admin = _Admin(port)
                    return server
                last = (
                    (root / "server.log").read_text(errors="replace")[-2000:]
                    if (root / "server.log").exists()
                    else res.stderr
                )
            raise RuntimeError(f"the PostgreSQL server did not start: {last}")
        except BaseException:
            if server is not None:
                server.stop()
            else:
                cls._stop_cluster(proc_user, bin_dir, root)
                shutil.rmtree(root, ignore_errors=True)
            raise

    @staticmethod
    def _as(user: str | None) -> list[str]:
        return ["runuser", "-u", user, "--"] if user else []

    @classmethod
    def _stop_cluster(cls, proc_user: str | None, bin_dir: Path, root: Path) -> None:
        if (root / "data" / "postmaster.pid").exists():
            pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"]
            subprocess.run(
                [*cls._as(proc_user), *pg_ctl],
                capture_output=True,
                timeout=60,
            )

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._stop_cluster(self._proc_user, self._bin, self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- databases -------------------------------------------------------------------------------
    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        assert self._admin is not None, "the server is stopped"
        self._admin.execute(sql)

    def create_database(self, *, template: str | None = None, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop_database(self, name: str) -> None:
        """Drop it even if a test left connections open (they are terminated)."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def make_template(self, prepare) -> str:
        """A database made once by `prepare(url)` (e.g. migrations), then marked as a template."""
        name = self.create_database(prefix="template")
        prepare(self.url(name))
        self.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        return name
