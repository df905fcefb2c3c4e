"""A server attaching to a running world (`comfyfleet serve` next to `comfyfleet sim`, a replica restarted
in the chaos soak) attaches even while that world's Vast emulator answers injected 429s and 5xx, instead of
starting a second, private world; a world that is gone is not waited for."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from app.config import Settings
from app.sim.world import publish, start_world


def _settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, provider="sim", sim_time_scale=0.0)


async def test_a_server_started_while_the_world_answers_429_and_5xx_attaches_to_it(tmp_path):
    world = await start_world(_settings(tmp_path), attach=False)
    try:
        publish(world)
        faults = world.emulator.faults
        faults.rate_limit_burst, faults.server_errors = 3, 2  # the next 5 API calls: 5xx first, then 429
        other = await start_world(_settings(tmp_path))
        assert other.attached, "a second, private world was started"
        assert other.endpoints["vast_api_url"] == world.endpoints["vast_api_url"]
        assert faults.rate_limit_burst == 0 and faults.server_errors == 0
        await other.stop()
    finally:
        await world.stop()


async def test_a_world_that_refuses_connections_is_not_waited_for(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    marker = tmp_path / "sim" / "world.json"
    marker.parent.mkdir(parents=True)
    endpoints = {"pid": os.getpid(), "vast_api_url": f"http://127.0.0.1:{port}", "vast_api_key": "sim-x"}
    marker.write_text(json.dumps(endpoints))
    t0 = time.monotonic()
    world = await start_world(_settings(tmp_path))
    try:
        assert not world.attached and world.endpoints["vast_api_url"] != endpoints["vast_api_url"]
        assert time.monotonic() - t0 < 20  # started its own without waiting out the busy window (30 s)
    finally:
        await world.stop()
