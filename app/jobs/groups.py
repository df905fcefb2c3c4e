"""Records that group jobs: stories (chained segments joined into one video) and batches.

A story or a batch never does GPU work itself: its segments and requests are ordinary job rows (with
`story_id` / `batch_id` in their request record), so caching, leasing, retries, cancel and restart
recovery are the jobs'. These rows hold only what the group adds: the order, the joined result, one
webhook for a whole batch. Low write rates (a few writes per segment or per batch), so plain sessions.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.redact import redact


class StoryState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # a segment is being made (or waits for the GPU)
    STITCHING = "stitching"  # every segment is done; joining their videos
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


STORY_TERMINAL = frozenset({StoryState.SUCCEEDED, StoryState.FAILED, StoryState.CANCELLED})


class BatchState(StrEnum):
    RUNNING = "running"
    ENDED = "ended"  # every job ended (succeeded, failed or cancelled)


def new_story_id() -> str:
    return "story_" + uuid.uuid4().hex[:20]


def new_batch_id() -> str:
    return "batch_" + uuid.uuid4().hex[:20]


class Story(Base):
    __tablename__ = "stories"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_story_id)
    state: Mapped[str] = mapped_column(String(16), default=StoryState.QUEUED.value, index=True)
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    # image sha256 + stored path + size, the resolved story seed, every segment's checked request
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    segment_jobs: Mapped[list[str | None]] = mapped_column(JSON, default=list)  # job id per segment
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # the API token's name the story was submitted with; every segment job records it too
    submitted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def terminal(self) -> bool:
        return StoryState(self.state) in STORY_TERMINAL


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_batch_id)
    state: Mapped[str] = mapped_column(String(16), default=BatchState.RUNNING.value, index=True)
    job_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending|delivered|failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_next_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    webhook_last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # as on its jobs
    created_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class GroupNotFound(LookupError):
    """No story or batch with that id."""


def _storable(group_id: str) -> bool:
    """Whether `group_id` could be a row's key. PostgreSQL refuses a NUL character in any text parameter
    (an error, not "no row"), so such an id from a URL is simply not found, on every database."""
    return "\x00" not in group_id


def _text(value: str) -> str:
    """Free text made storable on every database (PostgreSQL rejects NUL in text): NUL becomes U+FFFD."""
    return value.replace("\x00", "\ufffd")


class GroupRepo:
    """Story and batch rows. Every method commits before it returns."""

    def __init__(self, sessionmaker: async_sessionmaker, *, clock=time.time) -> None:
        self._sm = sessionmaker
        self._clock = clock

    # --- stories -----------------------------------------------------------------------------------
    async def create_story(self, **fields: Any) -> Story:
        now = self._clock()
        story = Story(created_at=now, updated_at=now, progress=0.0, cancel_requested=False, **fields)
        async with self._sm() as s, s.begin():
            s.add(story)
        return story

    async def story(self, story_id: str) -> Story:
        if not _storable(story_id):
            raise GroupNotFound(story_id)
        async with self._sm() as s:
            story = await s.get(Story, story_id)
        if story is None:
            raise GroupNotFound(story_id)
        return story

    async def update_story(self, story_id: str, **fields: Any) -> Story:
        """Write fields of a story; a terminal state also sets `finished_at`. Messages are redacted."""
        if fields.get("error_message"):
            fields["error_message"] = _text(redact(str(fields["error_message"]))[:2000])
        now = self._clock()
        fields["updated_at"] = now
        if "state" in fields and StoryState(fields["state"]) in STORY_TERMINAL:
            fields.setdefault("finished_at", now)
        async with self._sm() as s, s.begin():
            story = await s.get(Story, story_id)
            if story is None:
                raise GroupNotFound(story_id)
            for key, value in fields.items():
                setattr(story, key, value)
        return story

    async def request_story_cancel(self, story_id: str) -> Story:
        if not _storable(story_id):
            raise GroupNotFound(story_id)
        async with self._sm() as s, s.begin():
            story = await s.get(Story, story_id)
            if story is None:
                raise GroupNotFound(story_id)
            if not story.terminal:
                story.cancel_requested = True
                story.updated_at = self._clock()
        return story

    async def active_stories(self) -> list[Story]:
        live = [st.value for st in StoryState if st not in STORY_TERMINAL]
        q = select(Story).where(Story.state.in_(live)).order_by(Story.created_at)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def list_stories(self, *, limit: int = 50, offset: int = 0) -> list[Story]:
        q = select(Story).order_by(Story.created_at.desc()).limit(limit).offset(offset)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    # --- batches -----------------------------------------------------------------------------------
    async def create_batch(self, **fields: Any) -> Batch:
        batch = Batch(created_at=self._clock(), webhook_attempts=0, **fields)
        async with self._sm() as s, s.begin():
            s.add(batch)
        return batch

    async def batch(self, batch_id: str) -> Batch:
        if not _storable(batch_id):
            raise GroupNotFound(batch_id)
        async with self._sm() as s:
            batch = await s.get(Batch, batch_id)
        if batch is None:
            raise GroupNotFound(batch_id)
        return batch

    async def end_batch(self, batch_id: str, *, webhook: bool) -> bool:
        """running -> ended, once (a compare-and-set, so two jobs ending together send one webhook)."""
        values: dict[str, Any] = {"state": BatchState.ENDED.value, "finished_at": self._clock()}
        if webhook:
            values.update(webhook_status="pending", webhook_next_at=self._clock())
        q = (
            update(Batch)
            .where(Batch.id == batch_id, Batch.state == BatchState.RUNNING.value)
            .values(**values)
        )
        async with self._sm() as s, s.begin():
            return (await s.execute(q)).rowcount == 1

    async def running_batches(self) -> list[Batch]:
        q = select(Batch).where(Batch.state == BatchState.RUNNING.value).order_by(Batch.created_at)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def batch_webhooks_due(self, now: float) -> list[Batch]:
        q = select(Batch).where(Batch.webhook_status == "pending", Batch.webhook_next_at <= now)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def set_batch_fields(self, batch_id: str, **fields: Any) -> None:
        if fields.get("webhook_last_error"):
            fields["webhook_last_error"] = _text(redact(str(fields["webhook_last_error"]))[:2000])
        async with self._sm() as s, s.begin():
            await s.execute(update(Batch).where(Batch.id == batch_id).values(**fields))
