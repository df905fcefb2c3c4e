"""The control plane restarts mid-story: the running segment's job is re-attached to its prompt and the
story continues from that segment (no segment rendered twice), then joins as usual."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app.api.app import create_app
from app.jobs.wiring import build_services
from app.sim.world import publish, start_world
from tests.e2e.conftest import BASE_URL, b64, png_bytes, prompt_ids, sim_settings

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


async def test_restart_mid_story_continues_from_the_running_segment(tmp_path):
    settings = sim_settings(tmp_path / "data", sim_step_delay_s=0.2, pool_max_instances=1)
    world = await start_world(settings, attach=False)
    try:
        publish(world)
        body = {
            "image_base64": b64(png_bytes()),
            "seed": 5,
            "width": 256,
            "height": 256,
            "steps": 8,
            "segments": [{"prompt": p, "num_frames": 9} for p in ("one", "two", "three")],
        }
        first = await build_services(settings)
        await first.start()
        try:
            app = create_app(first, manage_lifecycle=False)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
                story_id = (await client.post("/vastai/generate-story", json=body)).json()["story_id"]
                deadline = time.monotonic() + 60
                while True:
                    story = (await client.get(f"/stories/{story_id}")).json()
                    seg = story["segments"][1]
                    if seg["state"] == "running" and str(seg["stage"] or "").startswith("sampling"):
                        break
                    assert time.monotonic() < deadline, story
                    await asyncio.sleep(0.02)
        finally:
            await first.stop()  # a shutdown: rows stay as they are, for the next start

        second = await build_services(settings)
        await second.start()
        try:
            app = create_app(second, manage_lifecycle=False)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
                deadline = time.monotonic() + 60
                while True:
                    story = (await client.get(f"/stories/{story_id}")).json()
                    if story["state"] in ("succeeded", "failed", "cancelled"):
                        break
                    assert time.monotonic() < deadline, story
                    await asyncio.sleep(0.05)
            assert story["state"] == "succeeded", story["error"]
            assert story["result"]["num_frames"] == 3 * 9 - 2
            assert [s["cached"] for s in story["segments"]] == [False, False, False]
            instance_id = story["segments"][0]["result"]["instance_id"]
            assert len(await prompt_ids(world.backend.boxes[int(instance_id)].comfy)) == 3  # none twice
        finally:
            await second.stop()
    finally:
        await world.stop()
