"""Reading and writing job rows. Every state change goes through `transition`, which checks the table in
`app.jobs.models` and closes the timing of the state being left in the same commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs.models import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    WAITING_STATES,
    CleanupAction,
    IllegalTransition,
    Job,
    JobState,
    check_transition,
)
from app.redact import redact


class JobNotFound(LookupError):
    pass


class JobRepo:
    """Job rows. Writes go through one in-process writer that commits whatever is queued in a single
    transaction (group commit): every caller still awaits its own commit, so "written before the work
    starts" holds, but 32 concurrent jobs share a handful of commits instead of queueing for 200. It also
    keeps SQLite to one writer, and orders a cancel against a racing runner transition."""

    def __init__(self, sessionmaker: async_sessionmaker, *, clock=time.time) -> None:
        self._sm = sessionmaker
        self._clock = clock
        self._pending: list[tuple[Callable[[AsyncSession], Awaitable[Any]], asyncio.Future, str | None]] = []
        self._flusher: asyncio.Task | None = None
        # Rows of active jobs exactly as this process last wrote them (see `transition`).
        self._live: dict[str, Job] = {}

    # --- the writer --------------------------------------------------------------------------------
    async def _write(self, op: Callable[[AsyncSession], Awaitable[Any]], job_id: str | None = None) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut, job_id))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
            try:
                async with self._sm() as s, s.begin():
                    for op, fut, _ in batch:
                        try:
                            outcomes.append((fut, await op(s), None))
                        except (IllegalTransition, JobNotFound) as exc:  # checked before writing anything
                            outcomes.append((fut, None, exc))
            except BaseException as exc:
                for _, fut, job_id in batch:
                    if job_id is not None:
                        self._live.pop(job_id, None)  # the cached copy may hold uncommitted values
                    if not fut.done():
                        fut.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("write aborted")
                        )
                if not isinstance(exc, Exception):
                    raise
                continue
            for fut, result, exc in outcomes:
                if fut.done():
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)

    # --- jobs --------------------------------------------------------------------------------------
    async def create(self, **fields: Any) -> Job:
        now = self._clock()
        fields.setdefault("state", JobState.QUEUED.value)
        fields.setdefault("stage", fields["state"])
        job = Job(created_at=now, updated_at=now, stage_started_at=now, timings={}, **fields)

        async def op(s: AsyncSession) -> Job:
            s.add(job)
            await s.flush()
            return job

        await self._write(op)
        self._live[job.id] = job
        return job

    async def get(self, job_id: str) -> Job | None:
        async with self._sm() as s:
            return await s.get(Job, job_id)

    async def peek(self, job_id: str) -> Job | None:
        """This process's own copy of an active job when it has one (no query), else the row."""
        live = self._live.get(job_id)
        return live if live is not None else await self.get(job_id)

    async def require(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def transition(self, job_id: str, target: JobState | str, **fields: Any) -> Job:
        """Move the job to `target` (checked), closing the timing of the state it leaves; committed.

        Fast path: this process wrote the row last (its copy is in `_live`), so one guarded UPDATE does
        it; the guard (same state and updated_at) sends anything changed elsewhere to the slow path."""
        target = JobState(target)

        async def op(s: AsyncSession) -> Job:
            now = self._clock()
            live = self._live.get(job_id)
            if live is not None:
                check_transition(job_id, live.state, target.value)
                values = self._transition_values(live, target, now, dict(fields))
                res = await s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == live.state, Job.updated_at == live.updated_at)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:
                    for k, v in values.items():
                        setattr(live, k, v)
                    if target in TERMINAL_STATES:
                        self._live.pop(job_id, None)
                    return live
                self._live.pop(job_id, None)
            job = await s.get(Job, job_id, populate_existing=True)
            if job is None:
                raise JobNotFound(job_id)
            check_transition(job_id, job.state, target.value)
            for k, v in self._transition_values(job, target, now, dict(fields)).items():
                setattr(job, k, v)
            await s.flush()
            if target not in TERMINAL_STATES:
                self._live[job_id] = job
            return job

        return await self._write(op, job_id)

    @staticmethod
    def _transition_values(job: Job, target: JobState, now: float, fields: dict[str, Any]) -> dict[str, Any]:
        timings = dict(job.timings or {})
        if job.stage_started_at is not None:
            timings[job.state] = round(timings.get(job.state, 0.0) + max(0.0, now - job.stage_started_at), 6)
        values: dict[str, Any] = {
            "timings": timings,
            "state": target.value,
            "stage": str(fields.pop("stage", target.value))[:64],
            "stage_started_at": now,
            "updated_at": now,
        }
        if target in TERMINAL_STATES:
            values["finished_at"] = now
            values["stage_started_at"] = None
            if target is JobState.SUCCEEDED:
                values["progress"] = 1.0
        if fields.get("error_message"):
            fields["error_message"] = redact(str(fields["error_message"]))[:2000]
        values.update(fields)
        return values

    async def update(self, job_id: str, **fields: Any) -> bool:
        """Update non-state fields of a job that has not ended. Returns False if it ended (or is unknown)."""

        async def op(s: AsyncSession) -> bool:
            fields["updated_at"] = self._clock()
            res = await s.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_([st.value for st in ACTIVE_STATES]))
                .values(**fields)
                .execution_options(synchronize_session=False)
            )
            live = self._live.get(job_id)
            if live is not None:
                for k, v in fields.items():
                    setattr(live, k, v)
            return res.rowcount > 0

        return await self._write(op, job_id)

    async def set_fields(self, job_id: str, **fields: Any) -> None:
        """Update fields regardless of state (webhook bookkeeping after the job ended; tests)."""

        async def op(s: AsyncSession) -> None:
            self._live.pop(job_id, None)
            await s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(**fields)
                .execution_options(synchronize_session=False)
            )

        await self._write(op, job_id)

    async def request_cancel(self, job_id: str) -> Job:
        async def op(s: AsyncSession) -> Job:
            self._live.pop(job_id, None)
            job = await s.get(Job, job_id, populate_existing=True)
            if job is None:
                raise JobNotFound(job_id)
            if not job.terminal:
                job.cancel_requested = True
                job.updated_at = self._clock()
                await s.flush()
            return job

        return await self._write(op, job_id)

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

        async def op(s: AsyncSession) -> None:
            s.add(CleanupAction(at=self._clock(), **fields))

        await self._write(op)

    async def cleanup_actions(self, limit: int = 100) -> list[CleanupAction]:
        q = select(CleanupAction).order_by(CleanupAction.id.desc()).limit(limit)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())
