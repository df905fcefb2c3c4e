"""End-to-end harness: the real product (build_services + create_app) against the simulated world.

The test starts the world itself (`start_world` + `publish`), so it can reach the far ends the product
cannot see (the Vast emulator's instances and faults, each instance's ComfyUI emulator); `build_services`
then attaches to it through `<data_dir>/sim/world.json`, exactly as `comfyfleet serve` does next to a
`comfyfleet sim`. Requests go through the HTTP API over ASGI; result URLs are made for
`http://testserver`, so the same client fetches them through the app's /files route.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Starlette's FileResponse imports anyio's file module lazily, mid-request; under pytest that import is
# assertion-rewritten while worker threads run, which trips a CPython 3.11 race. Import it up front.
import anyio._core._fileio  # noqa: F401
import httpx
from aiohttp import web
from PIL import Image

from app.api.app import create_app
from app.config import Settings
from app.jobs.services import Services
from app.jobs.wiring import build_services
from app.sim.comfyui import ComfyEmulator
from app.sim.world import World, publish, start_world

BASE_URL = "http://testserver"
TOKEN = "e2e-api-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(width: int = 256, height: int = 256, color: tuple[int, int, int] = (30, 90, 160)) -> bytes:
    img = Image.new("RGB", (width, height), color)
    for x in range(0, width, 16):  # some structure, so the simulated pan is visible
        img.paste((240, 200, 40), (x, 0, x + 4, height))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sim_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Fast simulated world: instant Vast boots, no sampler delay, no background cleanup."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "provider": "sim",
        "sim_time_scale": 0.0,
        "sim_step_delay_s": 0.0,
        "allow_loopback_urls": True,
        "cleanup_interval_s": 0,
        "public_url": BASE_URL,
        "comfy_warmup": False,  # tests/e2e/test_real_image.py covers the warm-up; the rest count prompts
        "sim_model_load_s": 0.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Sim:
    """One running control plane (services + HTTP client) attached to a world this test owns."""

    world: World
    services: Services
    client: httpx.AsyncClient

    @property
    def emulator(self) -> Any:
        return self.world.emulator

    def comfy(self, instance_id: str | int) -> ComfyEmulator:
        return self.world.backend.boxes[int(instance_id)].comfy

    def instances_ever_created(self) -> int:
        return len(self.emulator.instances) + len(self.emulator.destroyed)

    async def submit(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        r = await self.client.post("/vastai/generate-video", json=body, **kw)
        assert r.status_code in (200, 202), r.text
        return r.json()

    async def job(self, job_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    async def wait_job(
        self, job_id: str, pred: Callable[[dict[str, Any]], bool], within_s: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            job = await self.job(job_id)
            if pred(job):
                return job
            assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
            await asyncio.sleep(0.02)

    async def finished(self, job_id: str, within_s: float = 30.0) -> dict[str, Any]:
        return await self.wait_job(
            job_id, lambda j: j["state"] in ("succeeded", "failed", "cancelled"), within_s
        )


@contextlib.asynccontextmanager
async def sim_api(data_dir: Path, *, token: str | None = None, **overrides: Any) -> AsyncIterator[Sim]:
    settings = sim_settings(data_dir, api_token=token, **overrides)
    world = await start_world(settings, attach=False)
    try:
        publish(world)
        services = await build_services(settings)
        assert services.settings.vast_api_url == world.endpoints["vast_api_url"]  # attached, not a 2nd world
        await services.start()
        try:
            app = create_app(services, manage_lifecycle=False)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers, timeout=60
            ) as client:
                yield Sim(world, services, client)
        finally:
            await services.stop()
    finally:
        await world.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.02)


async def comfy_state(comfy: ComfyEmulator) -> tuple[dict[str, Any], dict[str, Any]]:
    """(queue, history) as the instance's ComfyUI emulator reports them over its HTTP API."""
    async with httpx.AsyncClient(base_url=comfy.url, timeout=10) as h:
        return (await h.get("/queue")).json(), (await h.get("/history")).json()


async def prompt_ids(comfy: ComfyEmulator) -> set[str]:
    """Every prompt the ComfyUI emulator has accepted (queued, running or in its history)."""
    queue, history = await comfy_state(comfy)
    ids = set(history)
    for key in ("queue_running", "queue_pending"):
        ids.update(item[1] for item in queue.get(key) or [])
    return ids


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,pix_fmt,width,height,r_frame_rate,avg_frame_rate,nb_read_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)["streams"][0]


@contextlib.asynccontextmanager
async def http_server(
    routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
    *,
    port: int = 0,
    method: str = "GET",
) -> AsyncIterator[str]:
    """A real loopback HTTP server (image source, webhook receiver)."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port or free_port())
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        await runner.cleanup()
