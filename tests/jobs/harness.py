"""Builds a whole control plane from the fakes: real database, pool, runner, manager, webhooks, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings
from app.db import init_db, make_engine, make_sessionmaker
from app.intake import ImageIntake
from app.jobs.models import Job
from app.jobs.services import Services, assemble
from tests.jobs.fakes import (
    FakeComfy,
    FakeLedger,
    FakePreparer,
    FakeProvider,
    FakeStore,
    png_bytes,
    workflow_loader,
)


@dataclass
class World:
    services: Services
    provider: FakeProvider
    ledger: FakeLedger
    preparer: FakePreparer
    comfy: FakeComfy
    store: FakeStore
    settings: Settings
    db_url: str

    async def submit(self, image: bytes | None = None, **raw: Any) -> Job:
        raw.setdefault("prompt", "a cat surfing")
        webhook_url = raw.pop("webhook_url", None)
        workflow = raw.pop("workflow", None)
        img = await self.services.intake.from_bytes(image or png_bytes(), "image_base64")
        return await self.services.submit(raw, img, workflow=workflow, webhook_url=webhook_url)

    async def wait(self, job_id: str, seconds: float = 10.0) -> Job:
        return await self.services.manager.wait(job_id, seconds)

    async def wait_state(self, job_id: str, *states: str, seconds: float = 10.0) -> Job:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = await self.services.repo.require(job_id)
            if job.state in states:
                return job
            await asyncio.sleep(0.005)
        raise AssertionError(f"job {job_id} never reached {states}; it is {job.state} ({job.stage})")

    async def wait_prompt(self, job_id: str, seconds: float = 10.0) -> str:
        """Until the job's ComfyUI prompt id is on disk (what restart recovery relies on)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = await self.services.repo.require(job_id)
            if job.comfy_prompt_id:
                return job.comfy_prompt_id
            await asyncio.sleep(0.005)
        raise AssertionError(f"job {job_id} never got a prompt id")


async def create_tables(url: str):
    """An engine on `url`, its schema brought to head the way the service does it (the migrations)."""
    engine = make_engine(url)
    await init_db(engine)
    return engine


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path,
    *,
    start: bool = True,
    provider: FakeProvider | None = None,
    ledger: FakeLedger | None = None,
    preparer: FakePreparer | None = None,
    comfy: FakeComfy | None = None,
    store: FakeStore | None = None,
    db_url: str | None = None,
    workflows=None,
    intake: ImageIntake | None = None,
    webhook_backoff_s: tuple[float, ...] | None = None,
    **settings_kw: Any,
):
    settings_kw.setdefault("cleanup_interval_s", 0)
    settings_kw.setdefault("data_dir", tmp_path / "data")
    settings = Settings(**settings_kw)
    db_url = db_url or settings.effective_database_url  # DATABASE_URL of the `database` fixture, if used
    engine = await create_tables(db_url)
    ledger = ledger or FakeLedger()
    provider = provider or FakeProvider()
    provider.ledger = ledger
    preparer = preparer or FakePreparer()
    comfy = comfy or FakeComfy()
    store = store or FakeStore(tmp_path / "store")
    services = assemble(
        settings,
        sessionmaker=make_sessionmaker(engine),
        provider=provider,
        preparer=preparer,
        comfy=comfy,
        store=store,
        workflows=workflows or workflow_loader(),
        ledger=ledger,
        engine=engine,
        intake=intake,
        webhook_backoff_s=webhook_backoff_s,
    )
    w = World(services, provider, ledger, preparer, comfy, store, settings, db_url)
    if start:
        await services.start()
    try:
        yield w
    finally:
        await services.stop()
