"""The job writer sends same-shaped writes of one commit as one executemany; these pin what happens
when some of those rows were changed by another process (a `comfyfleet cleanup` cron, a second server)."""

from __future__ import annotations

import asyncio

import pytest

from app.db import make_sessionmaker
from app.jobs.models import IllegalTransition
from app.jobs.repo import JobRepo
from tests.jobs.harness import create_tables

pytestmark = pytest.mark.usefixtures("database")


@pytest.fixture
async def engine(database):
    engine = await create_tables(database.url)
    yield engine
    await engine.dispose()


async def test_rows_changed_by_another_process_during_a_batched_transition(engine):
    ours, theirs = JobRepo(make_sessionmaker(engine)), JobRepo(make_sessionmaker(engine))
    jobs = await asyncio.gather(*(ours.create(workflow="w", request={}) for _ in range(3)))
    await theirs.request_cancel(jobs[1].id)
    await theirs.transition(jobs[2].id, "failed", error_message="stuck")

    moved = await asyncio.gather(*(ours.transition(j.id, "acquiring") for j in jobs), return_exceptions=True)

    assert moved[0].state == "acquiring" and not moved[0].cancel_requested
    assert moved[1].state == "acquiring" and moved[1].cancel_requested  # re-read: the runner sees the cancel
    assert isinstance(moved[2], IllegalTransition)  # the other process ended it first
    assert [(await ours.require(j.id)).state for j in jobs] == ["acquiring", "acquiring", "failed"]


async def test_progress_update_of_a_job_ended_by_another_process(engine):
    ours, theirs = JobRepo(make_sessionmaker(engine)), JobRepo(make_sessionmaker(engine))
    jobs = await asyncio.gather(*(ours.create(workflow="w", request={}) for _ in range(3)))
    await theirs.transition(jobs[0].id, "cancelled", error_message="cancelled by the user")

    written = await asyncio.gather(*(ours.update(j.id, progress=0.5) for j in jobs))

    assert written == [False, True, True]
    assert [(await ours.require(j.id)).progress for j in jobs] == [0.0, 0.5, 0.5]
    assert (await ours.require(jobs[0].id)).state == "cancelled"
