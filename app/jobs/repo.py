"""Reading and writing job rows. Every state change goes through `transition`, which checks the table in
`app.jobs.models` and closes the timing of the state being left in the same commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.jobs.models import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    WAITING_STATES,
    CleanupAction,
    Job,
    JobState,
    check_transition,
)
from app.redact import redact


class JobNotFound(LookupError):
    pass


class JobRepo:
    def __init__(self, sessionmaker: async_sessionmaker, *, clock=time.time) -> None:
        self._sm = sessionmaker
        self._clock = clock
        # One writer at a time in this process: SQLite cannot upgrade two concurrent read transactions to
        # writes, and a cancel racing a runner transition must see one order, not both.
        self._write = asyncio.Lock()

    async def create(self, **fields: Any) -> Job:
        now = self._clock()
        fields.setdefault("state", JobState.QUEUED.value)
        fields.setdefault("stage", fields["state"])
        job = Job(created_at=now, updated_at=now, stage_started_at=now, timings={}, **fields)
        async with self._sm() as s, s.begin():
            s.add(job)
        return job

    async def get(self, job_id: str) -> Job | None:
        async with self._sm() as s:
            return await s.get(Job, job_id)

    async def require(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def transition(self, job_id: str, target: JobState | str, **fields: Any) -> Job:
        """Move the job to `target` (checked), closing the timing of the state it leaves; committed."""
        target = JobState(target)
        now = self._clock()
        async with self._write, self._sm() as s, s.begin():
            job = await s.get(Job, job_id, with_for_update=True)
            if job is None:
                raise JobNotFound(job_id)
            check_transition(job_id, job.state, target.value)
            timings = dict(job.timings or {})
            if job.stage_started_at is not None:
                timings[job.state] = round(
                    timings.get(job.state, 0.0) + max(0.0, now - job.stage_started_at), 6
                )
            job.timings = timings
            job.state = target.value
            job.stage = str(fields.pop("stage", target.value))[:64]
            job.stage_started_at = now
            job.updated_at = now
            if target in TERMINAL_STATES:
                job.finished_at = now
                job.stage_started_at = None
                if target is JobState.SUCCEEDED:
                    job.progress = 1.0
            if fields.get("error_message"):
                fields["error_message"] = redact(str(fields["error_message"]))[:2000]
            for k, v in fields.items():
                setattr(job, k, v)
        return job

    async def update(self, job_id: str, **fields: Any) -> bool:
        """Update non-state fields of a job that has not ended. Returns False if it ended (or is unknown)."""
        fields["updated_at"] = self._clock()
        async with self._write, self._sm() as s, s.begin():
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_([st.value for st in ACTIVE_STATES]))
                .values(**fields)
            )
            return res.rowcount > 0

    async def set_fields(self, job_id: str, **fields: Any) -> None:
        """Update fields regardless of state (webhook bookkeeping after the job ended)."""
        async with self._sm() as s, s.begin():
            await s.execute(update(Job).where(Job.id == job_id).values(**fields))

    async def request_cancel(self, job_id: str) -> Job:
        async with self._write, self._sm() as s, s.begin():
            job = await s.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            if not job.terminal:
                job.cancel_requested = True
                job.updated_at = self._clock()
        return job

    async def list(
        self, *, states: Iterable[str] | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        q = select(Job).order_by(Job.created_at.desc()).limit(limit).offset(offset)
        if states:
            q = q.where(Job.state.in_(list(states)))
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def active(self) -> list[Job]:
        q = select(Job).where(Job.state.in_([st.value for st in ACTIVE_STATES])).order_by(Job.created_at)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def queue_position(self, job: Job) -> int | None:
        """1-based position among jobs waiting for an instance, or None when the job is not waiting."""
        if JobState(job.state) not in WAITING_STATES:
            return None
        q = select(func.count()).where(
            Job.state.in_([st.value for st in WAITING_STATES]), Job.created_at < job.created_at
        )
        async with self._sm() as s:
            return int((await s.execute(q)).scalar_one()) + 1

    async def counts_by_state(self) -> dict[str, int]:
        q = select(Job.state, func.count()).group_by(Job.state)
        async with self._sm() as s:
            rows = (await s.execute(q)).all()
        out = {st.value: 0 for st in JobState}
        out.update({state: int(n) for state, n in rows})
        return out

    async def stuck(self, older_than: float) -> list[Job]:
        """Active jobs created before `older_than` (wall clock)."""
        q = select(Job).where(Job.state.in_([st.value for st in ACTIVE_STATES]), Job.created_at < older_than)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def webhooks_due(self, now: float) -> list[Job]:
        q = select(Job).where(Job.webhook_status == "pending", func.coalesce(Job.webhook_next_at, 0) <= now)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def record_cleanup(self, **fields: Any) -> None:
        if fields.get("error"):
            fields["error"] = redact(str(fields["error"]))[:2000]
        async with self._sm() as s, s.begin():
            s.add(CleanupAction(at=self._clock(), **fields))

    async def cleanup_actions(self, limit: int = 100) -> list[CleanupAction]:
        q = select(CleanupAction).order_by(CleanupAction.id.desc()).limit(limit)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())
