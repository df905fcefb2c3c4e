"""Reading and writing job rows. Every state change goes through `transition`, which checks the table in
`app.jobs.models` and closes the timing of the state being left in the same commit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

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

_T = Job.__table__
_ACTIVE = [st.value for st in ACTIVE_STATES]
_INSERT = insert(_T)
_SELECT_ONE = select(_T).where(_T.c.id == bindparam("_id"))


class JobNotFound(LookupError):
    pass


def _text(value: Any) -> Any:
    """Free text from elsewhere (an error a server sent) made storable on every database: PostgreSQL
    rejects NUL in text, so it becomes U+FFFD instead of failing the write that records the error."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _storable(job_id: str) -> bool:
    """Whether `job_id` could be a row's key at all. PostgreSQL refuses a NUL character in any text
    parameter (an error, not "no row"), so such an id from a URL is simply not found, on every database."""
    return "\x00" not in job_id


def _defaults() -> dict[str, Any]:
    """A full row of column defaults, so every INSERT has the same shape (one executemany per batch)."""
    out: dict[str, Any] = {}
    for col in _T.columns:
        d = col.default
        if d is None:
            out[col.name] = None
        elif getattr(d, "is_callable", False):
            out[col.name] = d.arg(None)  # SQLAlchemy wraps zero-argument callables to take a context
        else:
            out[col.name] = d.arg
    return out


# Statements are built once per shape: SQLAlchemy then finds the compiled form in its cache without
# rebuilding and re-hashing the expression each time (the ORM path cost ~1 ms per write).
_UPDATES: dict[tuple[str, tuple[str, ...]], Any] = {}


def _set_clause(cols: Iterable[str]) -> dict[str, Any]:
    return {c: bindparam(c, type_=_T.c[c].type) for c in cols}


def _update(kind: str, cols: tuple[str, ...]) -> Any:
    """The UPDATE of `cols` for one kind of write, built once per shape (see `_UPDATES`):
    - guarded: WHERE id, state and updated_at are what this process last wrote (`transition`);
    - active: WHERE id and the job has not ended (`update`);
    - plain: WHERE id."""
    key = (kind, cols)
    stmt = _UPDATES.get(key)
    if stmt is not None:
        return stmt
    if kind == "guarded":
        where = (
            _T.c.id == bindparam("_id"),
            _T.c.state == bindparam("_state"),
            _T.c.updated_at == bindparam("_updated"),
        )
    elif kind == "active":
        # One fixed bind per state rather than an expanding IN, which executemany cannot take.
        where = (
            _T.c.id == bindparam("_id"),
            _T.c.state.in_([bindparam(f"_active{i}", st) for i, st in enumerate(_ACTIVE)]),
        )
    else:
        where = (_T.c.id == bindparam("_id"),)
    stmt = _UPDATES[key] = update(_T).where(*where).values(_set_clause(cols))
    return stmt


class _Plan:
    """One single-row write the flusher may send in one executemany with others of the same statement.

    `done(ok)` is called with whether the row was written; it returns the caller's result, or None to
    say "not written: run `fallback` (in the same transaction) instead"."""

    __slots__ = ("done", "fallback", "kind", "params", "stmt")

    def __init__(self, stmt, params, done, fallback, kind: str) -> None:
        self.stmt, self.params, self.done, self.fallback, self.kind = stmt, params, done, fallback, kind


_Op = Callable[[AsyncConnection], Awaitable[Any]]


class _Entry:
    __slots__ = ("fut", "job_id", "op", "plan")

    def __init__(self, op: _Op | None, plan: Callable[[], _Plan | None] | None, fut, job_id) -> None:
        self.op, self.plan, self.fut, self.job_id = op, plan, fut, job_id


class JobRepo:
    """Job rows. Writes go through one in-process writer that commits whatever is queued in a single
    transaction (group commit): every caller still awaits its own commit, so "written before the work
    starts" holds, but 32 concurrent jobs share a handful of commits instead of queueing for 200. Writes
    of the same shape in one commit go out as one executemany of a prebuilt Core statement. The writer
    also keeps SQLite to one writer, and orders a cancel against a racing runner transition."""

    def __init__(self, sessionmaker: async_sessionmaker, *, clock=time.time) -> None:
        self._sm = sessionmaker
        self._engine = sessionmaker.kw.get("bind")
        self._clock = clock
        self._pending: list[_Entry] = []
        self._flusher: asyncio.Task | None = None
        # Rows of active jobs exactly as this process last wrote them (see `transition`).
        self._live: dict[str, Job] = {}

    # --- the writer --------------------------------------------------------------------------------
    def _enqueue(self, entry: _Entry) -> Any:
        self._pending.append(entry)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return entry.fut

    async def _write(self, op: _Op, job_id: str | None = None) -> Any:
        fut = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Entry(op, None, fut, job_id))

    async def _write_planned(self, plan: Callable[[], _Plan | None], slow: _Op, job_id: str) -> Any:
        fut = asyncio.get_running_loop().create_future()
        return await self._enqueue(_Entry(slow, plan, fut, job_id))

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        if self._engine is not None:
            async with self._engine.begin() as conn:
                yield conn
        else:
            async with self._sm() as s, s.begin():
                yield await s.connection()

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            outcomes: list[tuple[asyncio.Future, Any, BaseException | None]] = []
            try:
                async with self._tx() as conn:
                    await self._run_batch(conn, batch, outcomes)
            except BaseException as exc:
                for entry in batch:
                    if entry.job_id is not None:
                        self._live.pop(entry.job_id, None)  # the cached copy may hold uncommitted values
                    if not entry.fut.done():
                        entry.fut.set_exception(
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

    async def _run_batch(self, conn: AsyncConnection, batch: list[_Entry], outcomes: list) -> None:
        """Run the batch in order. Planned writes collect into a segment (at most one per job, so their
        order inside it does not matter) that is sent grouped by statement before anything that must
        see its effect: a generic op, or a second write of a job already in the segment."""
        segment: dict[int, list[tuple[_Entry, _Plan]]] = {}
        in_segment: set[str] = set()
        for entry in batch:
            if entry.plan is not None:
                if entry.job_id in in_segment:
                    await self._run_segment(conn, segment, outcomes)
                    segment, in_segment = {}, set()
                try:
                    plan = entry.plan()
                except (IllegalTransition, JobNotFound) as exc:  # checked before writing anything
                    outcomes.append((entry.fut, None, exc))
                    continue
                if plan is not None:
                    segment.setdefault(id(plan.stmt), []).append((entry, plan))
                    in_segment.add(entry.job_id)
                    continue
            if segment:
                await self._run_segment(conn, segment, outcomes)
                segment, in_segment = {}, set()
            await self._run_op(conn, entry, entry.op, outcomes)
        if segment:
            await self._run_segment(conn, segment, outcomes)

    @staticmethod
    async def _run_op(conn: AsyncConnection, entry: _Entry, op: _Op, outcomes: list) -> None:
        try:
            outcomes.append((entry.fut, await op(conn), None))
        except (IllegalTransition, JobNotFound) as exc:  # checked before writing anything
            outcomes.append((entry.fut, None, exc))

    async def _run_segment(
        self, conn: AsyncConnection, segment: dict[int, list[tuple[_Entry, _Plan]]], outcomes: list
    ) -> None:
        multi_ok = conn.dialect.supports_sane_multi_rowcount
        for items in segment.values():
            stmt, kind = items[0][1].stmt, items[0][1].kind
            if len(items) > 1 and multi_ok:
                res = await conn.execute(stmt, [p.params for _, p in items])
                if kind == "insert" or res.rowcount == len(items):  # a failed insert raises
                    written = [True] * len(items)
                else:
                    written = await self._which_written(conn, kind, items)
            else:
                written = []
                for _, p in items:
                    n = (await conn.execute(stmt, p.params)).rowcount
                    written.append(kind == "insert" or n == 1)
            for (entry, plan), ok in zip(items, written, strict=True):
                result = plan.done(ok)
                if result is None:
                    await self._run_op(conn, entry, plan.fallback, outcomes)
                else:
                    outcomes.append((entry.fut, result, None))

    @staticmethod
    async def _which_written(
        conn: AsyncConnection, kind: str, items: list[tuple[_Entry, _Plan]]
    ) -> list[bool]:
        """Some rows of an executemany were not written (changed by another process): find which."""
        if kind == "transition":  # written rows now carry exactly the state and updated_at we set
            ids = [p.params["_id"] for _, p in items]
            q = select(_T.c.id, _T.c.state, _T.c.updated_at).where(_T.c.id.in_(ids))
            now = {r.id: (r.state, r.updated_at) for r in await conn.execute(q)}
            return [now.get(p.params["_id"]) == (p.params["state"], p.params["updated_at"]) for _, p in items]
        # Other writes are idempotent: send them one by one to learn each row's outcome.
        stmt = items[0][1].stmt
        return [(await conn.execute(stmt, p.params)).rowcount == 1 for _, p in items]

    # --- jobs --------------------------------------------------------------------------------------
    async def create(self, **fields: Any) -> Job:
        now = self._clock()
        row = _defaults()
        row.update(created_at=now, updated_at=now, stage_started_at=now, timings={})
        row.update(fields)
        row["state"] = row["state"] or JobState.QUEUED.value
        row["stage"] = row["stage"] or row["state"]

        def plan() -> _Plan:
            def done(ok: bool) -> Job:
                job = Job(**row)
                self._live[job.id] = job
                return job

            return _Plan(_INSERT, row, done, _failed_insert, "insert")

        return await self._write_planned(plan, _failed_insert, row["id"])

    async def get(self, job_id: str) -> Job | None:
        if not _storable(job_id):
            return None
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
        it; the guard (same state and updated_at) sends anything changed elsewhere to the slow path,
        which reads the row first."""
        target = JobState(target)

        def plan() -> _Plan | None:
            live = self._live.get(job_id)
            if live is None:
                return None
            check_transition(job_id, live.state, target.value)
            values = self._transition_values(live, target, self._clock(), dict(fields))
            cols = tuple(sorted(values))
            params = {"_id": job_id, "_state": live.state, "_updated": live.updated_at, **values}

            def done(ok: bool) -> Job | None:
                if not ok:
                    self._live.pop(job_id, None)
                    return None
                for k, v in values.items():
                    setattr(live, k, v)
                if target in TERMINAL_STATES:
                    self._live.pop(job_id, None)
                return live

            return _Plan(_update("guarded", cols), params, done, slow, "transition")

        async def slow(conn: AsyncConnection) -> Job:
            for _ in range(5):  # the guard fails only when another process wrote in between: read again
                job = await self._read(conn, job_id)
                check_transition(job_id, job.state, target.value)
                values = self._transition_values(job, target, self._clock(), dict(fields))
                stmt = _update("guarded", tuple(sorted(values)))
                params = {"_id": job_id, "_state": job.state, "_updated": job.updated_at, **values}
                if (await conn.execute(stmt, params)).rowcount == 1:
                    for k, v in values.items():
                        setattr(job, k, v)
                    if target not in TERMINAL_STATES:
                        self._live[job_id] = job
                    return job
            raise RuntimeError(f"job {job_id} keeps changing under this transition to {target.value}")

        return await self._write_planned(plan, slow, job_id)

    @staticmethod
    async def _read(conn: AsyncConnection, job_id: str) -> Job:
        if not _storable(job_id):
            raise JobNotFound(job_id)
        row = (await conn.execute(_SELECT_ONE, {"_id": job_id})).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return Job(**row)

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
            fields["error_message"] = _text(redact(str(fields["error_message"]))[:2000])
        values.update(fields)
        return values

    async def update(self, job_id: str, **fields: Any) -> bool:
        """Update non-state fields of a job that has not ended. Returns False if it ended (or is unknown)."""
        cols = tuple(sorted({*fields, "updated_at"}))
        stmt = _update("active", cols)

        def plan() -> _Plan:
            values = {**fields, "updated_at": self._clock()}

            def done(ok: bool) -> bool:
                live = self._live.get(job_id)
                if live is not None:
                    if ok:
                        for k, v in values.items():
                            setattr(live, k, v)
                    else:  # ended elsewhere: our copy is stale
                        self._live.pop(job_id, None)
                return ok

            return _Plan(stmt, {"_id": job_id, **values}, done, _unreachable, "update")

        return await self._write_planned(plan, _unreachable, job_id)

    async def set_fields(self, job_id: str, **fields: Any) -> None:
        """Update fields regardless of state (webhook bookkeeping after the job ended; tests)."""
        fields = {k: _text(v) for k, v in fields.items()}
        stmt = _update("plain", tuple(sorted(fields)))

        async def op(conn: AsyncConnection) -> None:
            self._live.pop(job_id, None)
            await conn.execute(stmt, {"_id": job_id, **fields})

        await self._write(op, job_id)

    async def request_cancel(self, job_id: str) -> Job:
        stmt = _update("plain", ("cancel_requested", "updated_at"))

        async def op(conn: AsyncConnection) -> Job:
            self._live.pop(job_id, None)
            job = await self._read(conn, job_id)
            if not job.terminal:
                job.cancel_requested = True
                job.updated_at = self._clock()
                await conn.execute(
                    stmt, {"_id": job_id, "cancel_requested": True, "updated_at": job.updated_at}
                )
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
        q = select(Job).where(Job.state.in_(_ACTIVE)).order_by(Job.created_at)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def many(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """The rows of `job_ids` that exist, by id (batches and stories read their jobs in one query)."""
        ids = list(job_ids)
        if not ids:
            return {}
        async with self._sm() as s:
            rows = (await s.execute(select(Job).where(Job.id.in_(ids)))).scalars()
            return {job.id: job for job in rows}

    async def active_on(self, instance_id: str) -> list[Job]:
        """Active jobs placed on `instance_id` (provisioning it, running or uploading from it)."""
        q = select(Job).where(Job.state.in_(_ACTIVE), Job.instance_id == instance_id).order_by(Job.created_at)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def cost_by_workflow(self, since: float) -> dict[str, tuple[float, int]]:
        """Workflow -> (GPU money charged to jobs that ended since `since`, how many jobs)."""
        q = (
            select(Job.workflow, func.coalesce(func.sum(Job.cost_usd), 0.0), func.count())
            .where(Job.finished_at >= since)
            .group_by(Job.workflow)
        )
        async with self._sm() as s:
            return {wf: (float(total), int(n)) for wf, total, n in (await s.execute(q)).all()}

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
        q = select(Job).where(Job.state.in_(_ACTIVE), Job.created_at < older_than)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def webhooks_due(self, now: float) -> list[Job]:
        q = select(Job).where(Job.webhook_status == "pending", func.coalesce(Job.webhook_next_at, 0) <= now)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def webhooks_never_enqueued(self) -> list[str]:
        """Ended jobs with a webhook that was never marked due (the process died between the job's end
        and the enqueue): ids, oldest first."""
        q = (
            select(Job.id)
            .where(
                Job.state.in_([st.value for st in TERMINAL_STATES]),
                Job.webhook_url.is_not(None),
                Job.webhook_status.is_(None),
            )
            .order_by(Job.created_at)
        )
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())

    async def spend_since(self, submitted_by: str, since: float) -> float:
        """GPU cost recorded on the jobs `submitted_by` (an API token's name) created since `since`."""
        q = select(func.coalesce(func.sum(Job.cost_usd), 0.0)).where(
            Job.submitted_by == submitted_by, Job.created_at >= since
        )
        async with self._sm() as s:
            return float((await s.execute(q)).scalar_one())

    async def record_cleanup(self, **fields: Any) -> None:
        if fields.get("error"):
            fields["error"] = redact(str(fields["error"]))[:2000]
        row = {"at": self._clock(), **{k: _text(v) for k, v in fields.items()}}

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(insert(CleanupAction.__table__), row)

        await self._write(op)

    async def cleanup_actions(self, limit: int = 100) -> list[CleanupAction]:
        q = select(CleanupAction).order_by(CleanupAction.id.desc()).limit(limit)
        async with self._sm() as s:
            return list((await s.execute(q)).scalars())


async def _failed_insert(conn: AsyncConnection) -> Any:
    raise RuntimeError("a job row insert reported no row written")


async def _unreachable(conn: AsyncConnection) -> Any:
    raise RuntimeError("this write has no slow path")
