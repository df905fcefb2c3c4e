"""Story and batch rows: a batch ends once, even when its last jobs end together."""

from __future__ import annotations

import asyncio

from app.db import init_db, make_engine, make_sessionmaker
from app.jobs.groups import GroupNotFound, GroupRepo, StoryState


async def _repo(tmp_path) -> tuple[GroupRepo, object]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await init_db(engine)
    return GroupRepo(make_sessionmaker(engine)), engine


async def test_two_jobs_ending_together_end_their_batch_once(tmp_path):
    repo, engine = await _repo(tmp_path)
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


async def test_story_end_sets_finished_at_and_a_cancel_request_after_it_is_ignored(tmp_path):
    repo, engine = await _repo(tmp_path)
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


async def test_unknown_story_or_batch_is_not_found(tmp_path):
    repo, engine = await _repo(tmp_path)
    try:
        for call in (repo.story("story_nope"), repo.batch("batch_nope")):
            try:
                await call
            except GroupNotFound:
                continue
            raise AssertionError("expected GroupNotFound")
    finally:
        await engine.dispose()
