"""Real `comfyfleet` processes for the end-to-end tests: `sim`, `serve`, `generate`, `cleanup`.

Each runs in its own session (process group) with output in a log file (a full pipe would block it), and
is always ended by the test that started it: SIGTERM, then SIGKILL, to its own process group only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from app.db import init_db, make_engine, make_sessionmaker
from app.pool.ledger import InstanceLedger
from app.pool.provider import Instance
from app.sim.vast import default_market

CLI = [sys.executable, "-m", "app.cli"]


def sim_env(data_dir: Path, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "API_TOKEN", "R2_"))}
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "SIM_TIME_SCALE": "0",
            "SIM_STEP_DELAY_S": "0",
            "CLEANUP_INTERVAL_S": "0",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """End a process this test started (and anything it started): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def spawn(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


def tail(log: Path, n: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    return ""


def run(args: list[str], env: dict[str, str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s)


def wait_world(proc: subprocess.Popen, data_dir: Path, log: Path, within_s: float = 30.0) -> dict[str, Any]:
    """The endpoints `comfyfleet sim` published once its world answers."""
    marker = data_dir / "sim" / "world.json"
    deadline = time.monotonic() + within_s
    while True:
        assert proc.poll() is None, f"comfyfleet sim exited:\n{tail(log)}"
        with contextlib.suppress(OSError, ValueError):
            world = json.loads(marker.read_text())
            if world.get("pid") == proc.pid:
                return world
        assert time.monotonic() < deadline, f"no world.json:\n{tail(log)}"
        time.sleep(0.05)


def wait_http(url: str, proc: subprocess.Popen, log: Path, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        assert proc.poll() is None, f"process exited ({proc.returncode}):\n{tail(log)}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{url} never answered:\n{tail(log)}"
        time.sleep(0.05)


def vast_instances(world: dict[str, Any]) -> list[dict[str, Any]]:
    """Every live instance of the world's Vast account, straight from the emulator's API (all pages)."""
    headers = {"Authorization": f"Bearer {world['vast_api_key']}"}
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 25}
    while True:
        r = httpx.get(
            world["vast_api_url"] + "/api/v1/instances/", params=params, headers=headers, timeout=10
        )
        r.raise_for_status()
        data = r.json()
        out.extend(data["instances"])
        if not data.get("next_token"):
            return out
        params["after_token"] = data["next_token"]


def rent_directly(world: dict[str, Any], label: str) -> int:
    """Rent an instance on the emulator behind comfyfleet's back (someone else's process, or a crash
    between create and record): a free offer, any image, the given label."""
    headers = {"Authorization": f"Bearer {world['vast_api_key']}"}
    for offer in reversed(default_market()):  # the pool ranks from the top; take from the bottom
        r = httpx.put(
            f"{world['vast_api_url']}/api/v0/asks/{offer['id']}/",
            json={"image": "vastai/base-image", "disk": 20, "label": label, "runtype": "ssh_proxy"},
            headers=headers,
            timeout=10,
        )
        if r.status_code == 200:
            return int(r.json()["new_contract"])
    raise AssertionError("no free offer to rent directly")


def ledger(data_dir: Path) -> list[Instance]:
    """Every row of the instances table the servers of `data_dir` keep (the ledger), read as they do."""

    async def read() -> list[Instance]:
        engine = make_engine(Settings(_env_file=None, data_dir=data_dir).effective_database_url)
        try:
            await init_db(engine)
            return await InstanceLedger(make_sessionmaker(engine)).list(alive_only=False)
        finally:
            await engine.dispose()

    return asyncio.run(read())
