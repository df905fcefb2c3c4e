"""Replicas: several `comfyfleet serve` on one database, any of which may die at any moment.

- Every active job is claimed by exactly one replica (`jobs.claimed_by`, `jobs.claim_until`). A job is
  claimed when it is created; its replica renews the claim every `REPLICA_HEARTBEAT_S` for
  `REPLICA_LEASE_S`. A replica that stops renewing (SIGKILL, hung, cut off) loses its jobs: another one
  takes them (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas scanning at once never queue on each
  other's rows; one conditional UPDATE per job on SQLite) and resumes each exactly as restart recovery does
  (`JobManager.recover_job`): a job whose prompt was already on a ComfyUI is RE-ATTACHED to that prompt,
  never run again. A replica whose claim was taken while it still ran (it was only slow) notices on its
  next heartbeat and lets the job go without touching the row.
- Identical requests coalesce across replicas: the leader of a cache key holds a row in `inflight_keys`
  (the key is the primary key, so one row per key), renewed with its claims; followers on any replica
  poll that row and check the result cache once it is gone (or take the lead when it lapsed).
- Waits and SSE streams see jobs another replica runs by polling those jobs' rows every `REPLICA_POLL_S`
  (one query per replica per interval for all watched jobs), published into the local `EventHub` like
  local progress. Polling rather than LISTEN/NOTIFY: it works the same on SQLite, needs no dedicated
  connection that must be re-established (notifications sent while it is down are lost), and job rows
  already carry progress at most once a second, so a 1 s poll shows everything there is to show.
- Fleet decisions (renting, the cleanup) go through `app.pool.locks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Float, Integer, String, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.jobs.cache import Coalescer
from app.jobs.models import ACTIVE_STATES, TERMINAL_STATES, Job
from app.pool.locks import CLEANUP_LEASE, FleetGate, FleetLocks
from app.redact import redact

log = logging.getLogger(__name__)

_J = Job.__table__
_ACTIVE = sorted(s.value for s in ACTIVE_STATES)


def default_replica_id() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class InflightKey(Base):
    """The one replica (and job) running the GPU work for a cache key right now."""

    __tablename__ = "inflight_keys"

    cache_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    until: Mapped[float] = mapped_column(Float, default=0.0)


_K = InflightKey.__table__


def _insert_ignore(conn: Any, table: Any, **values: Any) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table).values(**values).on_conflict_do_nothing()


class RateCounter(Base):
    """Requests of one API token in one fixed window (`window` = start time // window length), counted by
    every replica together (a token's rate is the fleet's, not each process's)."""

    __tablename__ = "rate_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


_R = RateCounter.__table__


class SharedRates:
    """Per-token request rates counted in the database (a sliding-window estimate over two fixed windows:
    the current count plus the previous window's, weighted by how much of it still overlaps)."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine, self._clock = engine, clock

    async def hit(self, name: str, amount: int, window_s: float) -> tuple[bool, float]:
        """Count one request; (allowed, seconds until one more would be) - a refused one is not counted."""
        now = self._clock()
        win = int(now // window_s)
        into = (now - win * window_s) / window_s
        async with self.engine.begin() as conn:
            await conn.execute(_insert_ignore(conn, _R, name=name, window_no=win, count=0))
            await conn.execute(
                update(_R).where(_R.c.name == name, _R.c.window_no == win).values(count=_R.c["count"] + 1)
            )
            rows = await conn.execute(
                select(_R.c.window_no, _R.c["count"]).where(
                    _R.c.name == name, _R.c.window_no.in_([win - 1, win])
                )
            )
            counts = dict(rows.all())
            estimate = counts.get(win - 1, 0) * (1.0 - into) + counts.get(win, 0)
            if estimate <= amount:
                if into < 0.01:  # now and then: forget windows nobody reads any more
                    await conn.execute(delete(_R).where(_R.c.name == name, _R.c.window_no < win - 1))
                return True, 0.0
            await conn.execute(
                update(_R).where(_R.c.name == name, _R.c.window_no == win).values(count=_R.c["count"] - 1)
            )
        return False, max(1.0, (1.0 - into) * window_s)


# --- job claims ------------------------------------------------------------------------------------
class JobClaims:
    def __init__(
        self,
        engine: AsyncEngine,
        replica_id: str,
        *,
        lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine, self.replica_id, self.lease_s, self._clock = engine, replica_id, lease_s, clock

    def fresh(self) -> dict[str, Any]:
        """The claim columns of a job this replica creates."""
        return {"claimed_by": self.replica_id, "claim_until": self._clock() + self.lease_s}

    def _claimable(self, now: float) -> Any:
        return (
            _J.c.state.in_(_ACTIVE),
            or_(_J.c.claimed_by.is_(None), _J.c.claim_until.is_(None), _J.c.claim_until < now),
        )

    def _take(self, ids: list[str], now: float) -> Any:
        # updated_at is set to itself: a claim is not a change of the job (the runner's guarded writes
        # compare updated_at with what they last wrote)
        state, free = self._claimable(now)
        return (
            update(_J)
            .where(_J.c.id.in_(ids), state, or_(free, _J.c.claimed_by == self.replica_id))
            .values(claimed_by=self.replica_id, claim_until=now + self.lease_s, updated_at=_J.c.updated_at)
        )

    async def claim(self, job_id: str) -> bool:
        """Take one job if nobody's claim on it holds (or it is ours)."""
        now = self._clock()
        stmt = (
            update(_J)
            .where(
                _J.c.id == job_id,
                _J.c.state.in_(_ACTIVE),
                or_(_J.c.claimed_by == self.replica_id, *self._claimable(now)[1:]),
            )
            .values(claimed_by=self.replica_id, claim_until=now + self.lease_s, updated_at=_J.c.updated_at)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def claim_orphans(self, limit: int = 100, *, own: bool = False) -> list[str]:
        """Claim active jobs nobody holds (their replica died or stopped); oldest first. With `own`
        (a replica starting), also those its earlier incarnation (same REPLICA_ID) still holds: that
        process is gone, so they need not wait for the lease to lapse."""
        now = self._clock()
        state, free = self._claimable(now)
        cond = or_(free, _J.c.claimed_by == self.replica_id) if own else free
        pick = select(_J.c.id).where(state, cond).order_by(_J.c.created_at).limit(limit)
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                ids = list((await conn.execute(pick.with_for_update(skip_locked=True))).scalars())
                if not ids:
                    return []
                await conn.execute(self._take(ids, now))
                return ids
            taken = []
            for job_id in list((await conn.execute(pick)).scalars()):
                if (await conn.execute(self._take([job_id], now))).rowcount == 1:
                    taken.append(job_id)
            return taken

    async def heartbeat(self, job_ids: Iterable[str]) -> set[str]:
        """Renew this replica's claims on `job_ids`; returns the ids it still holds (the others were taken
        by another replica after our claim lapsed, or ended).

        On PostgreSQL the rows to renew are locked with SKIP LOCKED: a row the job's own write holds
        right now is renewed on the next beat instead of waiting, so the heartbeat never takes part in a
        lock cycle with the job writer's multi-row transactions (a deadlock)."""
        ids = sorted(set(job_ids))
        if not ids:
            return set()
        now = self._clock()
        kept: set[str] = set()
        async with self.engine.begin() as conn:
            pg = conn.dialect.name == "postgresql"
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                mine = (_J.c.id.in_(chunk), _J.c.claimed_by == self.replica_id)
                target = select(_J.c.id).where(*mine)
                if pg:
                    target = target.with_for_update(skip_locked=True)
                await conn.execute(
                    update(_J)
                    .where(_J.c.id.in_(target) if pg else and_(*mine))
                    .values(claim_until=now + self.lease_s, updated_at=_J.c.updated_at)
                )
                kept.update((await conn.execute(select(_J.c.id).where(*mine))).scalars())
        return kept

    async def owns(self, job_id: str) -> bool:
        """Whether this replica still holds the job's claim."""
        async with self.engine.connect() as conn:
            holder = (await conn.execute(select(_J.c.claimed_by).where(_J.c.id == job_id))).scalar()
        return holder == self.replica_id

    async def take_webhook(self, job: Job) -> bool:
        """Take a due webhook delivery for this replica: its next attempt time moves one lease ahead
        (so another replica retries it only if this one dies sending), if nobody else moved it first."""
        now = self._clock()
        stmt = (
            update(_J)
            .where(
                _J.c.id == job.id,
                _J.c.webhook_status == "pending",
                _J.c.webhook_next_at.is_(None)
                if job.webhook_next_at is None
                else _J.c.webhook_next_at == job.webhook_next_at,
            )
            .values(webhook_next_at=now + self.lease_s, updated_at=_J.c.updated_at)
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).rowcount == 1

    async def release_all(self) -> None:
        """A graceful stop: let other replicas take this one's active jobs at once."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_J)
                .where(_J.c.claimed_by == self.replica_id, _J.c.state.in_(_ACTIVE))
                .values(claim_until=0.0, updated_at=_J.c.updated_at)
            )


# --- coalescing across replicas ------------------------------------------------------------------
class SharedCoalescer(Coalescer):
    """`Coalescer` whose leadership of a key is also a row in `inflight_keys` (see the module doc)."""

    def __init__(
        self,
        engine: AsyncEngine,
        replica_id: str,
        *,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.engine, self.replica_id, self.lease_s, self.poll_s = engine, replica_id, lease_s, poll_s
        self._clock = clock
        self._watchers: set[asyncio.Task] = set()

    async def _take(self, key: str) -> bool:
        now = self._clock()
        async with self.engine.begin() as conn:
            await conn.execute(_insert_ignore(conn, _K, cache_key=key, holder=None, until=0.0))
            stmt = (
                update(_K)
                .where(
                    _K.c.cache_key == key,
                    or_(_K.c.holder.is_(None), _K.c.holder == self.replica_id, _K.c.until < now),
                )
                .values(holder=self.replica_id, until=now + self.lease_s)
            )
            return (await conn.execute(stmt)).rowcount == 1

    async def _held_elsewhere(self, key: str) -> bool:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(_K.c.holder, _K.c.until).where(_K.c.cache_key == key))).first()
        return row is not None and row.holder is not None and row.until >= self._clock()

    async def aclaim(self, key: str) -> asyncio.Future | None:
        fut = self.claim(key)  # one leader per key in this process first
        if fut is not None:
            return fut
        try:
            if await self._take(key):
                return None
        except BaseException:
            super().finish(key, False)
            raise
        # Another replica leads: wait (with this process's other followers) until its row is gone.
        local = self._leaders[key]
        task = asyncio.get_running_loop().create_task(self._watch(key))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        return local

    async def _watch(self, key: str) -> None:
        try:
            while True:
                await asyncio.sleep(self.poll_s)
                try:
                    if not await self._held_elsewhere(key):
                        break
                except Exception as exc:
                    log.warning("coalescing: reading in-flight key failed: %s", redact(str(exc)))
        finally:
            # True = look in the cache now (a miss claims again, and may lead)
            super().finish(key, True)

    async def afinish(self, key: str, ok: bool) -> None:
        super().finish(key, ok)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(delete(_K).where(_K.c.cache_key == key, _K.c.holder == self.replica_id))
        except Exception as exc:  # the row lapses by itself
            log.warning("coalescing: releasing in-flight key failed: %s", redact(str(exc)))

    async def heartbeat(self) -> None:
        if not any(not f.done() for f in self._leaders.values()):
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_K).where(_K.c.holder == self.replica_id).values(until=self._clock() + self.lease_s)
            )

    async def close(self) -> None:
        for t in list(self._watchers):
            t.cancel()


# --- the replica's background work ---------------------------------------------------------------
class Replica:
    """Heartbeat (claims, in-flight keys, the cleanup lease, the pool's view of the fleet), re-claiming
    orphaned jobs, and polling rows of jobs other replicas run for local waiters and streams."""

    def __init__(
        self,
        *,
        claims: JobClaims,
        locks: FleetLocks,
        coalescer: SharedCoalescer,
        manager: Any,
        pool: Any,
        ledger: Any,
        events: Any,
        repo: Any,
        heartbeat_s: float = 5.0,
        poll_s: float = 1.0,
    ) -> None:
        self.claims, self.locks, self.coalescer = claims, locks, coalescer
        self.manager, self.pool, self.ledger, self.events, self.repo = manager, pool, ledger, events, repo
        self.heartbeat_s, self.poll_s = heartbeat_s, poll_s
        self.cleanup_leader = False
        self._tasks: list[asyncio.Task] = []
        self._seen: dict[str, tuple] = {}
        self.rates = SharedRates(claims.engine)  # API token rates counted by all replicas together
        self.reclaimed: list[tuple[str, str]] = []
        self.adopt = self.cleanup = True

    @property
    def id(self) -> str:
        return self.claims.replica_id

    async def start(self, *, adopt: bool = True, cleanup: bool = True) -> None:
        """`adopt`: take other replicas' orphaned jobs (a server; not a one-shot `generate`). `cleanup`:
        compete for the cleanup lease (only a process that runs the cleanup loop)."""
        self.adopt, self.cleanup = adopt, cleanup
        await self.sync_pool()
        loop = asyncio.get_running_loop()
        self._tasks = [
            # renewing claims is its own loop, so slow duties (syncing the pool, resuming taken-over
            # jobs) never delay it past the lease
            loop.create_task(self._every(self.heartbeat_s, self.beat), name="replica-heartbeat"),
            loop.create_task(self._every(self.heartbeat_s, self.tick), name="replica-duties"),
            loop.create_task(self._every(self.poll_s, self.poll_rows), name="replica-poll"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        await self.coalescer.close()

    async def after_jobs_stopped(self) -> None:
        """Hand everything over now instead of when the leases lapse."""
        with contextlib.suppress(Exception):
            await self.claims.release_all()
        with contextlib.suppress(Exception):
            await self.locks.release(CLEANUP_LEASE)

    async def _every(self, interval: float, step: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("replica %s: %s failed: %s", self.id, step.__name__, redact(str(exc)))

    async def tick(self) -> None:
        """One round of duties: the cleanup lease, learning the fleet, taking orphans."""
        if self.cleanup:
            self.cleanup_leader = await self.locks.try_acquire(CLEANUP_LEASE, self.claims.lease_s)
        await self.sync_pool()
        if self.adopt:
            await self.reclaim()

    async def beat(self) -> None:
        """One heartbeat: renew our claims and in-flight keys, let go of jobs taken from us."""
        running = [jid for jid, t in self.manager.tasks.items() if not t.done()]
        kept = await self.claims.heartbeat(running)
        for job_id in set(running) - kept:
            task = self.manager.tasks.get(job_id)
            if task is not None and not task.done():
                log.warning(
                    "replica %s: job %s was taken over by another replica; letting it go", self.id, job_id
                )
                task.cancel()  # no reason given: the runner leaves the row to its new owner
        await self.coalescer.heartbeat()

    async def sync_pool(self) -> None:
        if self.ledger is None or not hasattr(self.pool, "sync"):
            return
        await self.pool.sync(await self.ledger.list(alive_only=True))
        with contextlib.suppress(Exception):
            await self.pool.touch_busy()

    async def reclaim(self) -> list[tuple[str, str]]:
        """Take jobs whose replica is gone and resume them (re-attach, re-queue) as recovery does."""
        ids = await self.claims.claim_orphans()
        actions = []
        for job_id in ids:
            if job_id in self.manager.tasks and not self.manager.tasks[job_id].done():
                continue
            job = await self.repo.get(job_id)
            if job is None or job.terminal:
                continue
            action = await self.manager.recover_job(job)
            log.info("recovery: job %s %s (taken over by replica %s)", job_id, action, self.id)
            actions.append((job_id, action))
        self.reclaimed.extend(actions)
        return actions

    async def cleanup_turn(self) -> bool:
        """Whether this replica runs the cleanup now (it holds, or just took, the cleanup lease)."""
        self.cleanup_leader = await self.locks.try_acquire(CLEANUP_LEASE, self.claims.lease_s)
        return self.cleanup_leader

    async def poll_rows(self) -> None:
        """Publish progress and ends of watched jobs that run on other replicas."""
        watched = self.events.watched() - {j for j, t in self.manager.tasks.items() if not t.done()}
        for gone in set(self._seen) - watched:
            self._seen.pop(gone, None)
        if not watched:
            return
        cols = (_J.c.id, _J.c.state, _J.c.stage, _J.c.progress, _J.c.updated_at)
        async with self.claims.engine.connect() as conn:
            rows = list((await conn.execute(select(*cols).where(_J.c.id.in_(sorted(watched))))).all())
        for row in rows:
            sig = (row.state, row.stage, row.progress, row.updated_at)
            if self._seen.get(row.id) == sig:
                continue
            self._seen[row.id] = sig
            if row.state in {s.value for s in TERMINAL_STATES}:
                job = await self.repo.get(row.id)
                if job is not None:
                    public = job.to_public() if self.events.wants(job.id) else {}
                    self.events.publish(job.id, {"event": "end", **public, "_job": job})
                continue
            self.events.publish(
                row.id,
                {
                    "event": "progress",
                    "job_id": row.id,
                    "state": row.state,
                    "stage": row.stage,
                    "progress": round(row.progress or 0.0, 4),
                    "stage_progress": None,
                    "detail": {},
                },
            )


def enable_replicas(services: Any, settings: Any, engine: AsyncEngine) -> Replica:
    """Turn a single-process `Services` into a replica (called by `build_services` when replicas are on)."""
    replica_id = settings.replica_id or default_replica_id()
    lease_s = settings.replica_lease_s
    claims = JobClaims(engine, replica_id, lease_s=lease_s)
    locks = FleetLocks(engine, replica_id)
    coalescer = SharedCoalescer(engine, replica_id, lease_s=lease_s, poll_s=min(0.5, settings.replica_poll_s))
    services.runner.coalescer = coalescer
    services.manager.claims = claims
    services.runner.owns = claims.owns
    if services.ledger is not None:
        services.pool.gate = FleetGate(
            locks,
            services.ledger,
            max_instances=settings.pool_max_instances,
            spend_cap_usd=settings.spend_cap_usd,
            max_price_per_hour=settings.vast_max_price_per_hour,
            idle_ttl_s=settings.idle_ttl_s,
            ttl_s=lease_s,  # renewed while a create runs; a dead holder blocks renting this long
        )
    replica = Replica(
        claims=claims,
        locks=locks,
        coalescer=coalescer,
        manager=services.manager,
        pool=services.pool,
        ledger=services.ledger,
        events=services.events,
        repo=services.repo,
        heartbeat_s=settings.replica_heartbeat_s,
        poll_s=settings.replica_poll_s,
    )
    services.cleaner.gate = replica.cleanup_turn
    services.webhooks.take = claims.take_webhook
    services.replica = replica
    log.info(
        "replica %s: claims lease %.0f s, heartbeat %.0f s", replica_id, lease_s, settings.replica_heartbeat_s
    )
    return replica
