"""Story and batch rows: a batch ends once, even when its last jobs end together."""

from __future__ import annotations

import asyncio

import pytest

from app.db import make_engine, make_sessionmaker
from app.jobs.groups import GroupNotFound, GroupRepo, StoryState

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


async def _repo(database) -> tuple[GroupRepo, object]:
    engine = make_engine(database.url)  # already migrated to head by the fixture
    return GroupRepo(make_sessionmaker(engine)), engine


async def test_two_jobs_ending_together_end_their_batch_once(database):
    repo, engine = await _repo(database)
    try:
        batch = await repo.create_batch(id="batch_x", job_ids=["a", "b"], webhook_url="https://h.example/x")
        ended = await asyncio.gather(
            repo.end_batch(batch.id, webhook=True), repo.end_batch(batch.id, webhook=True)
        )
        assert sorted(ended) == [False, True]
        row = await repo.batch(batch.id)
        assert row.state == "ended" and row.webhook_status == "pending" and row.finished_at
        assert [b.id for b in await repo.batch_webhooks_due(row.finished_at + 1)] == [batch.id]
    finally:
        await engine.dispose()


async def test_story_end_sets_finished_at_and_a_cancel_request_after_it_is_ignored(database):
    repo, engine = await _repo(database)
    try:
        story = await repo.create_story(
            request={"segments": []}, segment_jobs=[], state=StoryState.QUEUED.value
        )
        assert [s.id for s in await repo.active_stories()] == [story.id]
        done = await repo.update_story(story.id, state=StoryState.SUCCEEDED.value)
        assert done.finished_at is not None and await repo.active_stories() == []
        assert (await repo.request_story_cancel(story.id)).cancel_requested is False
    finally:
        await engine.dispose()


async def test_unknown_story_or_batch_is_not_found(database):
    repo, engine = await _repo(database)
    try:
        # an id with a NUL (PostgreSQL refuses such a parameter outright) is simply not found either
        for call in (
            repo.story("story_nope"),
            repo.batch("batch_nope"),
            repo.story("story_\x00"),
            repo.batch("batch_\x00"),
            repo.request_story_cancel("story_\x00"),
        ):
            try:
                await call
            except GroupNotFound:
                continue
            raise AssertionError("expected GroupNotFound")
    finally:
        await engine.dispose()


async def test_story_error_with_a_nul_character_is_stored_and_the_token_name_kept(database):
    repo, engine = await _repo(database)
    try:
        story = await repo.create_story(
            request={"segments": []}, segment_jobs=[], state=StoryState.QUEUED.value, submitted_by="ci"
        )
        failed = await repo.update_story(
            story.id, state=StoryState.FAILED.value, error_message="worker said \x00 nothing"
        )
        assert failed.error_message == "worker said \ufffd nothing"
        row = await repo.story(story.id)
        assert row.submitted_by == "ci" and row.error_message == "worker said \ufffd nothing"
    finally:
        await engine.dispose()
