"""The jobs room's adapters against the real neighbours: ComfyClient + the ComfyUI emulator, the shipped
workflow, the local store and the result cache. Only the provider and SSH provisioning are fakes."""

import asyncio
import contextlib
import time

# Starlette's FileResponse imports anyio's file module lazily, mid-request; under pytest that import is
# assertion-rewritten (ast.parse) while worker threads run, which trips a CPython 3.11 race
# ("AST constructor recursion depth mismatch"). Importing it up front avoids the race.
import anyio._core._fileio  # noqa: F401
import av
import pytest

from app.comfy import ComfyClient
from app.config import Settings
from app.db import make_sessionmaker
from app.jobs.services import assemble
from app.jobs.wiring import ComfyClientSession, comfy_connector
from app.pool.ports import ComfyTarget
from app.sim.comfyui import ComfyEmulator
from app.store.local import LocalStore
from app.workflows import get_workflow
from tests.comfy.world import make_start_image, make_wan_comfy_dir, object_info
from tests.jobs.fakes import FakeLedger, FakeProvider
from tests.jobs.harness import create_tables

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


class EmulatorPreparer:
    def __init__(self, url: str) -> None:
        self.url = url

    async def prepare(self, instance, workflow, on_progress):
        return ComfyTarget(self.url)

    async def release(self, instance):
        return None


@contextlib.asynccontextmanager
async def emulator(tmp_path, step_delay_s=0.0):
    emu = ComfyEmulator(
        make_wan_comfy_dir(tmp_path / "ComfyUI"), object_info=object_info(), step_delay_s=step_delay_s
    )
    await emu.start("127.0.0.1", 0)
    try:
        yield emu
    finally:
        await emu.stop()


@contextlib.asynccontextmanager
async def real_services(tmp_path, url):
    settings = Settings(data_dir=tmp_path / "data", cleanup_interval_s=0)
    engine = await create_tables(settings.effective_database_url)
    provider = FakeProvider()
    provider.ledger = FakeLedger()
    store = LocalStore(tmp_path / "results", "http://testserver")
    services = assemble(
        settings,
        sessionmaker=make_sessionmaker(engine),
        provider=provider,
        preparer=EmulatorPreparer(url),
        comfy=comfy_connector(timeout_s=5),
        store=store,
        workflows=lambda name: get_workflow(name, settings),
        ledger=provider.ledger,
        engine=engine,
    )
    await services.start()
    try:
        yield services, store
    finally:
        await services.stop()


async def test_job_through_real_client_emulator_and_local_store(tmp_path):
    image = make_start_image(tmp_path / "start.png", (128, 96))
    async with emulator(tmp_path) as emu, real_services(tmp_path, emu.url) as (services, store):
        img = await services.intake.from_path(image)
        raw = {"prompt": "a fox", "num_frames": 9, "width": 320, "height": 256, "seed": 42}
        job = await services.submit(raw, img)
        job = await services.manager.wait(job.id, 30)
        assert job.state == "succeeded", job.error_message
        r = job.result
        assert (r["seed"], r["num_frames"], r["resolution"], r["simulated"]) == (42, 9, "320x256", True)
        key = r["video_url"].split("/files/", 1)[1]
        with av.open(str(store.path_for(key))) as container:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 320, 256)
            assert sum(1 for _ in container.decode(stream)) == 9
        again = await services.manager.wait(
            (await services.submit(raw, await services.intake.from_path(image))).id, 30
        )
        assert again.result["cached"] is True and again.cost_usd == 0.0


async def test_cancel_through_real_client_stops_the_emulator_prompt(tmp_path):
    image = make_start_image(tmp_path / "start.png")
    async with emulator(tmp_path, step_delay_s=0.3) as emu, real_services(tmp_path, emu.url) as (services, _):
        job = await services.submit(
            {"prompt": "x", "num_frames": 9, "width": 256, "height": 256},
            await services.intake.from_path(image),
        )
        for _ in range(500):
            job = await services.repo.require(job.id)
            if job.comfy_prompt_id:
                break
            await asyncio.sleep(0.01)
        job = await services.manager.cancel(job.id)
        assert job.state == "cancelled"
        async with ComfyClient(emu.url) as client:
            for _ in range(100):  # ComfyUI notices an interrupt at the next sampler tick
                queue = await client.queue()
                if queue["queue_running"] == [] and queue["queue_pending"] == []:
                    break
                await asyncio.sleep(0.05)
            assert queue["queue_running"] == [] and queue["queue_pending"] == []
            entry = await client.history(job.comfy_prompt_id)
            assert entry["status"]["status_str"] == "error"  # interrupted, not finished


async def test_attach_follows_a_prompt_submitted_by_another_client(tmp_path):
    from tests.comfy.world import wan_graph

    image = make_start_image(tmp_path / "start.png")
    async with emulator(tmp_path, step_delay_s=0.05) as emu, ComfyClient(emu.url) as first:
        name = await first.upload_image(image)
        submitted: asyncio.Future = asyncio.get_running_loop().create_future()
        run = asyncio.create_task(
            first.run(wan_graph(name), deadline=time.monotonic() + 30, on_submitted=submitted.set_result)
        )
        prompt_id = await submitted
        async with ComfyClient(emu.url) as second:
            session = ComfyClientSession(second, poll_s=0.05)
            result = await session.attach(
                prompt_id, deadline=time.monotonic() + 30, on_progress=lambda p: None
            )
            assert result is not None and result.prompt_id == prompt_id
            paths = await session.download_outputs(result, tmp_path / "out")
            assert any(p.suffix == ".mp4" for p in paths)
            assert (
                await session.attach(
                    "no-such-prompt", deadline=time.monotonic() + 5, on_progress=lambda p: None
                )
                is None
            )
        await run


async def test_local_store_files_route_needs_no_token_but_the_api_does(tmp_path):
    import httpx
    from pydantic import SecretStr

    from app.api.app import create_app
    from app.store.routes import local_files_router

    image = make_start_image(tmp_path / "start.png")
    async with emulator(tmp_path) as emu, real_services(tmp_path, emu.url) as (services, store):
        services.settings = services.settings.model_copy(update={"api_token": SecretStr("tok-123456")})
        services.routers.append(local_files_router(store))
        app = create_app(services, manage_lifecycle=False)
        job = await services.manager.wait(
            (
                await services.submit(
                    {"prompt": "x", "num_frames": 9, "width": 256, "height": 256},
                    await services.intake.from_path(image),
                )
            ).id,
            30,
        )
        path = job.result["video_url"].removeprefix("http://testserver")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as c:
            r = await c.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
            assert (await c.get(f"/jobs/{job.id}")).status_code == 401
