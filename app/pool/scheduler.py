"""Leasing instances to jobs: reuse first, queue one job ahead per GPU, rent only within limits.

Each instance takes `slots_per_instance` leases (default 2): one job whose prompt runs and one whose prompt
already waits in that ComfyUI's queue, so the GPU starts the next job the moment the current one ends. Jobs
that find no slot wait in FIFO order. A rental starts when jobs wait (or sit queued ahead) beyond the
rentals already in flight, and only while the pool is below `max_instances` and the projected spend of
everything alive (plus the cheapest life a new instance can have) stays under the spend cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.pool.errors import InstanceGone, NoCapacity, RentFailed, SpendCapReached
from app.pool.ports import ComfyTarget, InstancePreparer, Ledger, ProgressFn
from app.pool.provider import CreateRequest, Instance, InstanceState, Provider
from app.redact import redact

log = logging.getLogger(__name__)


# Jobs in a row that could not reach an instance's ComfyUI before the instance is retired.
UNREACHABLE_STRIKES = 2


@dataclass
class PoolMember:
    instance: Instance
    leases: int = 0
    prepared: dict[str, ComfyTarget] = field(default_factory=dict)  # workflow name -> target
    prep_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    retiring: bool = False
    jobs_served: int = 0
    jobs: set[str] = field(default_factory=set)  # ids of the jobs holding a lease on it now
    paused: str | None = None  # why it takes no new leases for now (its model files being re-checked)
    model_files: dict[tuple[str, str], int] = field(default_factory=dict)  # (folder, name) -> bytes held
    unreachable: int = 0  # jobs in a row whose ComfyUI could not be reached on it

    @property
    def id(self) -> str:
        return self.instance.id


@dataclass
class _Waiter:
    job_id: str
    workflow: Any
    instance_id: str | None
    future: asyncio.Future
    on_wait: Callable[[str], None] | None


class Lease:
    """A job's right to use one instance slot until `release()`."""

    def __init__(self, pool: Pool, member: PoolMember, job_id: str) -> None:
        self._pool, self.member, self.job_id = pool, member, job_id
        self.acquired_at = pool._clock()
        self.provision_s = 0.0  # this job's share of preparation time (for its cost)
        self._released = False
        self._bad: str | None = None

    @property
    def instance(self) -> Instance:
        return self.member.instance

    async def ensure_ready(self, workflow: Any, on_progress: ProgressFn) -> ComfyTarget:
        """Make the instance able to run `workflow` (once per instance and workflow; waits for a
        concurrent preparation instead of repeating it)."""
        member = self.member
        name = workflow.name
        if name in member.prepared:
            return member.prepared[name]
        t0 = self._pool._mono()
        async with member.prep_lock:
            if name not in member.prepared:
                member.instance.state = InstanceState.PROVISIONING
                target = await self._pool._preparer.prepare(member.instance, workflow, on_progress)
                member.prepared[name] = target
                self._pool.record_workflow(member, workflow)
                member.instance.state = InstanceState.READY
                if member.instance.ready_at is None:
                    member.instance.ready_at = self._pool._clock()
                await self._pool._persist(member.instance)
        # a warm-up run during preparation is the instance's time (meta.warmup_s), not this job's
        warmup_s = float(member.instance.meta.pop("last_warmup_s", 0.0) or 0.0)
        self.provision_s = max(0.0, self._pool._mono() - t0 - warmup_s)
        return member.prepared[name]

    def needs_preparation(self, workflow: Any) -> bool:
        return workflow.name not in self.member.prepared

    def invalidate(self, workflow: Any) -> None:
        """The instance's files for `workflow` proved broken: prepare it again on next use."""
        self.member.prepared.pop(workflow.name, None)

    def mark_bad(self, reason: str) -> None:
        """The instance misbehaved (lost, broken GPU): retire it when this lease is released."""
        self._bad = reason

    def note_unreachable(self, reason: str) -> None:
        """This job could not reach the instance's ComfyUI (after the client's own retries). Once is a
        blip and the job is retried; `UNREACHABLE_STRIKES` jobs in a row and the instance is retired, or
        an instance whose ComfyUI stays unreachable would fail every job queued to it, one by one."""
        self.member.unreachable += 1
        if self.member.unreachable >= UNREACHABLE_STRIKES:
            self.mark_bad(f"ComfyUI unreachable for {self.member.unreachable} jobs in a row: {reason}")

    def note_reached(self) -> None:
        """A job ran on the instance's ComfyUI: the unreachable count starts again."""
        self.member.unreachable = 0

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        await self._pool._release(self, self._bad)


class Pool:
    def __init__(
        self,
        provider: Provider,
        preparer: InstancePreparer,
        *,
        create_request: Callable[[Any], CreateRequest],
        ledger: Ledger | None = None,
        max_instances: int = 2,
        spend_cap_usd: float = 20.0,
        max_price_per_hour: float = 1.0,
        idle_ttl_s: float = 600.0,
        ready_timeout_s: float = 1800.0,
        slots_per_instance: int = 2,
        max_rent_failures: int = 2,
        disk_headroom_gb: float = 0.0,
        pool_workflows: Callable[[], list[Any]] | None = None,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._preparer = preparer
        self._create_request = create_request
        self._ledger = ledger
        self.max_instances = max_instances
        self.spend_cap_usd = spend_cap_usd
        self.max_price_per_hour = max_price_per_hour
        self.idle_ttl_s = idle_ttl_s
        self.ready_timeout_s = ready_timeout_s
        self.slots = max(1, slots_per_instance)
        self.max_rent_failures = max_rent_failures
        self._clock, self._mono = clock, mono
        self.members: dict[str, PoolMember] = {}
        self._waiters: list[_Waiter] = []
        self._rentals: set[asyncio.Task] = set()
        self._rent_failures = 0
        self.rents_started = 0
        self._closed = False
        self._adopt_task: asyncio.Task | None = None  # background re-adoption after a failed list
        # Replicas: renting is decided under a fleet-wide lease (app.pool.locks.FleetGate); after a
        # refusal this pool rents nothing until `_gate_retry_at` (the replica's next `sync` retries).
        self.gate: Any = None
        self._gate_retry_at = 0.0
        self.gate_retry_s = 2.0
        # issue 11: which workflows each instance holds, disk room, POOL_WORKFLOWS provisioned when idle
        self.disk_headroom_gb = disk_headroom_gb
        self._pool_workflows = pool_workflows or (lambda: [])
        self._background: set[asyncio.Task] = set()

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self, retry_s: float = 30.0) -> None:
        """Adopt the provider's live, usable instances (reuse across restarts; static endpoints). A failed
        list is an alarm, not "no instances": it is logged and retried in the background."""
        try:
            await self._adopt()
        except Exception as exc:
            log.error(
                "pool: ALARM: listing %s instances failed (%s); retrying every %.0f s",
                self._provider.name,
                redact(str(exc)),
                retry_s,
            )
            task = asyncio.get_running_loop().create_task(self._adopt_later(retry_s))
            self._adopt_task = task

    async def _adopt_later(self, retry_s: float) -> None:
        while not self._closed:
            await asyncio.sleep(retry_s)
            try:
                await self._adopt()
                return
            except Exception as exc:
                log.error("pool: ALARM: listing instances still fails: %s", redact(str(exc)))

    async def _adopt(self) -> None:
        for inst in await self._provider.list():
            if (
                inst.state in (InstanceState.READY, InstanceState.PROVISIONING)
                and inst.id not in self.members
            ):
                self.members[inst.id] = PoolMember(inst)
                log.info(
                    "pool: adopted instance %s (%s, $%.3f/h)", inst.id, inst.provider, inst.price_per_hour
                )
        self._dispatch()

    async def stop(self) -> None:
        """Stop renting and close connections. Instances stay alive (reused after a restart, or reaped)."""
        self._closed = True
        if self._adopt_task is not None:
            self._adopt_task.cancel()
        for t in [*self._rentals, *self._background]:
            t.cancel()
        for t in [*self._rentals, *self._background]:
            with contextlib.suppress(BaseException):
                await t
        for w in self._waiters:
            if not w.future.done():
                w.future.set_exception(NoCapacity("the service is shutting down"))
        self._waiters.clear()
        for m in list(self.members.values()):
            with contextlib.suppress(Exception):
                await self._preparer.release(m.instance)

    # --- leasing -----------------------------------------------------------------------------------
    async def lease(
        self,
        job_id: str,
        workflow: Any,
        *,
        instance_id: str | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> Lease:
        """Wait for a slot (FIFO). With `instance_id`, only that instance will do (re-attaching a job)."""
        if instance_id is not None and instance_id not in self.members:
            raise InstanceGone(f"instance {instance_id} is no longer in the pool")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        waiter = _Waiter(job_id, workflow, instance_id, fut, on_wait)
        self._waiters.append(waiter)
        self._dispatch()
        try:
            lease = await fut
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                await fut.result().release()  # granted in the same tick as the cancel
            raise
        try:  # in use from now: an out-of-process cleanup (cron) sees only the ledger's last_used_at
            await self._persist(lease.instance)
        except BaseException:
            await lease.release()
            raise
        return lease

    def waiting(self) -> int:
        return len(self._waiters)

    def _free_member(self, w: _Waiter) -> PoolMember | None:
        best: PoolMember | None = None
        for m in self.members.values():
            if m.retiring or m.paused or m.leases >= self.slots:
                continue
            if w.instance_id is not None and m.id != w.instance_id:
                continue
            holds = w.workflow.name in m.prepared
            if not holds and w.instance_id is None and not self.has_room(m, w.workflow):
                continue  # its disk cannot take this workflow's models: another instance (or a new one)
            key = (0 if holds else 1, m.leases)  # an instance that already holds the models first
            if best is None or key < (0 if w.workflow.name in best.prepared else 1, best.leases):
                best = m
        return best

    # --- workflows per instance (issue 11) ----------------------------------------------------------
    def record_workflow(self, member: PoolMember, workflow: Any) -> None:
        """`workflow` is prepared on `member`: remember its model files and list it on the instance."""
        for m in getattr(workflow, "models", ()) or ():
            member.model_files[(m.folder, m.name)] = int(m.size or 0)
        member.instance.meta["workflows"] = sorted(member.prepared)

    def has_room(self, member: PoolMember, workflow: Any) -> bool:
        """Whether the instance's disk takes `workflow`'s model files beside what it holds, keeping the
        headroom. An instance of unknown disk size (a static endpoint) is assumed to have room."""
        disk_gb = member.instance.meta.get("disk_gb")
        if not isinstance(disk_gb, int | float) or disk_gb <= 0:
            return True
        held = sum(member.model_files.values())
        extra = sum(
            int(m.size or 0)
            for m in getattr(workflow, "models", ()) or ()
            if (m.folder, m.name) not in member.model_files
        )
        return (held + extra) / 1e9 + self.disk_headroom_gb <= float(disk_gb) + 1e-9

    def _make_way(self) -> None:
        """Jobs whose workflow fits on no instance's disk while the pool is at its maximum: retire one idle
        instance (holding none of their workflows) so that a new one, sized for them, can be rented.
        Without this they would wait until the idle reaper took an instance."""
        if self._closed or not self._provider.can_create or self.live_count() < self.max_instances:
            return
        members = [m for m in self.members.values() if not m.retiring]
        stuck = [
            w
            for w in self._waiters
            if w.instance_id is None
            and not w.future.done()
            and not any(w.workflow.name in m.prepared or self.has_room(m, w.workflow) for m in members)
        ]
        if not stuck:
            return
        wanted = {w.workflow.name for w in stuck}
        for m in members:
            if m.leases == 0 and not m.paused and not m.prep_lock.locked() and not wanted & set(m.prepared):
                reason = f"making way: {', '.join(sorted(wanted))} does not fit on its disk"
                m.retiring = True  # no new leases, and not picked twice
                task = asyncio.get_running_loop().create_task(self._evict(m, reason))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return

    async def _evict(self, member: PoolMember, reason: str) -> None:
        member.retiring = False  # retire() refuses nothing for an idle member; it sets the flag again
        try:
            await self.retire(member.id, reason=reason)
        except Exception as exc:
            log.warning("pool: retiring %s to make way failed: %s", member.id, redact(str(exc)))

    def _provision_idle(self, member: PoolMember) -> None:
        """An idle ready instance gets the next POOL_WORKFLOWS workflow it lacks, in the background, when
        its disk has room (a later job for that workflow then starts without provisioning)."""
        if self._closed or member.leases or member.retiring or member.paused or member.prep_lock.locked():
            return
        try:
            wanted = [wf for wf in self._pool_workflows() if wf.name not in member.prepared]
        except Exception as exc:  # a broken workflow folder must not stop the pool
            log.warning("pool: POOL_WORKFLOWS could not be loaded: %s", redact(str(exc)))
            return
        wf = next((wf for wf in wanted if self.has_room(member, wf)), None)
        if wf is None:
            return

        async def prepare() -> None:
            async with member.prep_lock:
                if wf.name in member.prepared or member.retiring:
                    return
                try:
                    target = await self._preparer.prepare(member.instance, wf, lambda _p: None)
                except Exception as exc:
                    log.warning(
                        "pool: provisioning %s onto idle %s failed: %s", wf.name, member.id, redact(str(exc))
                    )
                    return
                member.prepared[wf.name] = target
                self.record_workflow(member, wf)
                member.instance.last_used_at = self._clock()  # the work counts as use for the reaper
            await self._persist(member.instance)
            if not self._closed:
                self._provision_idle(member)  # the next one, if any and still idle

        task = asyncio.get_running_loop().create_task(prepare(), name=f"provision-{member.id}-{wf.name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _dispatch(self) -> None:
        """Grant slots to waiters in order, then decide whether to rent."""
        # Free slots counted once: with hundreds of jobs waiting and every slot taken, each waiter costs
        # one comparison instead of a scan of the pool (this runs on every lease and release).
        free = sum(
            self.slots - m.leases
            for m in self.members.values()
            if not m.retiring and not m.paused and m.leases < self.slots
        )
        for w in list(self._waiters) if self._waiters else ():
            if w.future.done():
                self._waiters.remove(w)
                continue
            if free <= 0 and w.instance_id is None:
                continue
            m = self._free_member(w)
            if m is None:
                if w.instance_id is not None and w.instance_id not in self.members:
                    self._waiters.remove(w)
                    w.future.set_exception(InstanceGone(f"instance {w.instance_id} left the pool"))
                continue
            self._waiters.remove(w)
            free -= 1
            m.leases += 1
            m.jobs.add(w.job_id)
            m.jobs_served += 1
            m.instance.last_used_at = self._clock()
            w.future.set_result(Lease(self, m, w.job_id))
        self._make_way()
        self._maybe_rent()

    def _demand(self) -> int:
        """Jobs that would start sooner on another GPU: waiting ones plus those queued ahead."""
        queued_ahead = sum(max(0, m.leases - 1) for m in self.members.values())
        return len([w for w in self._waiters if w.instance_id is None]) + queued_ahead

    def live_count(self) -> int:
        return len(self.members) + len(self._rentals)

    def projected_spend(self) -> float:
        """Money already spent by live instances plus what each costs until the idle reaper can take it."""
        now = self._clock()
        ttl_h = self.idle_ttl_s / 3600.0
        return (
            sum(m.instance.spent_usd(now) + m.instance.price_per_hour * ttl_h for m in self.members.values())
            + len(self._rentals) * self.max_price_per_hour * ttl_h
        )

    def _new_instance_floor(self) -> float:
        return self.max_price_per_hour * self.idle_ttl_s / 3600.0

    def _maybe_rent(self) -> None:
        if self._closed:
            return
        if self._adopt_task is not None and not self._adopt_task.done():
            return  # the provider's list failed: what already runs is unknown, so rent nothing (jobs wait)
        if self.gate is not None and self._mono() < self._gate_retry_at:
            return  # the fleet said no a moment ago
        plain = [w for w in self._waiters if w.instance_id is None]
        if not plain and self._demand() == 0:
            return
        while self._demand() > len(self._rentals):
            reason = self._cannot_rent_reason()
            if reason is not None:
                if not self.members and not self._rentals:
                    err = reason
                    for w in plain:
                        self._waiters.remove(w)
                        if not w.future.done():
                            w.future.set_exception(err)
                return
            workflow = plain[0] if plain else next(iter(self._waiters), None)
            wf = workflow.workflow if workflow else None
            if wf is None:
                return
            task = asyncio.get_running_loop().create_task(self._rent(wf))
            self._rentals.add(task)
            task.add_done_callback(self._rentals.discard)
            self.rents_started += 1
            for w in plain:
                if w.on_wait:
                    with contextlib.suppress(Exception):
                        w.on_wait("renting")

    def _cannot_rent_reason(self) -> Exception | None:
        if not self._provider.can_create:
            return NoCapacity(
                "no usable instance: the configured static endpoints are all unavailable and this provider "
                "cannot rent new ones; check STATIC_ENDPOINTS"
            )
        if self.live_count() >= self.max_instances:
            return NoCapacity(f"the pool is at its maximum of {self.max_instances} instances")
        if self.projected_spend() + self._new_instance_floor() > self.spend_cap_usd:
            return SpendCapReached(
                f"renting another instance would exceed the spend cap of ${self.spend_cap_usd:.2f} "
                f"(live instances are projected at ${self.projected_spend():.2f}); "
                "raise SPEND_CAP_USD or wait"
            )
        return None

    async def _rent(self, workflow: Any) -> None:
        inst: Instance | None = None
        try:
            request = self._create_request(workflow)
            if self.gate is not None:
                async with self.gate.admit(self._provider.name) as refusal:
                    if refusal is None:
                        inst = await self._provider.create(request)
                if inst is None:  # the fleet (all replicas together) is full: wait for a slot
                    log.info("pool: not renting: %s", refusal)
                    self._gate_retry_at = self._mono() + self.gate_retry_s
                    return
            else:
                inst = await self._provider.create(request)
            log.info("pool: rented %s (%s) at $%.3f/h", inst.id, inst.label, inst.price_per_hour)
            inst = await self._provider.wait_ready(inst, self._mono() + self.ready_timeout_s)
            if inst.state not in (InstanceState.READY, InstanceState.PROVISIONING):
                inst.state = InstanceState.PROVISIONING
            self._rent_failures = 0
            inst.meta.setdefault("disk_gb", request.disk_gb)
            self.members.setdefault(inst.id, PoolMember(inst))  # a replica's sync may have adopted it
        except asyncio.CancelledError:
            if inst is not None and inst.id not in self.members:
                # Booting instances are not adopted after a restart: do not leave this one billing.
                try:
                    await asyncio.shield(self._provider.destroy(inst))
                except Exception as exc:
                    log.error(
                        "pool: could not destroy %s after a cancelled rental: %s", inst.id, redact(str(exc))
                    )
            raise
        except Exception as exc:  # any rental failure must reach the waiting jobs, never vanish
            self._rent_failures += 1
            msg = redact(str(exc)) or type(exc).__name__
            log.warning("pool: renting failed (%d in a row): %s", self._rent_failures, msg)
            if inst is not None:
                with contextlib.suppress(Exception):
                    await self._provider.destroy(inst)
            if self._rent_failures >= self.max_rent_failures:
                err = RentFailed(f"could not rent a working instance ({self._rent_failures} attempts): {msg}")
                for w in [w for w in self._waiters if w.instance_id is None]:
                    self._waiters.remove(w)
                    if not w.future.done():
                        w.future.set_exception(err)
                self._rent_failures = 0
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._rentals.discard(task)
            if not self._closed:
                self._dispatch()

    async def _release(self, lease: Lease, bad: str | None) -> None:
        m = lease.member
        m.leases = max(0, m.leases - 1)
        m.jobs.discard(lease.job_id)
        m.instance.last_used_at = self._clock()
        if bad is not None:
            log.warning("pool: retiring instance %s: %s", m.id, bad)
            await self.retire(m.id, reason=bad, force=True)
        else:
            await self._persist(m.instance)
        self._dispatch()
        if bad is None and m.id in self.members:
            self._provision_idle(m)

    async def _persist(self, inst: Instance) -> None:
        if self._ledger is not None:
            try:
                await self._ledger.update(inst)
            except Exception as exc:  # bookkeeping must not fail a job
                log.warning("pool: ledger update for %s failed: %s", inst.id, redact(str(exc)))

    async def sync(self, fleet: list[Instance]) -> None:
        """Replicas: take in the fleet as the ledger (shared by all replicas) shows it. Ready instances
        another replica rented become usable here (re-attaching its jobs needs them too), "last used" is
        the latest any replica wrote, and instances gone from the fleet (destroyed by the replica running
        the cleanup) leave this pool once no job here holds them."""
        live = {i.id: i for i in fleet if i.id and i.provider == self._provider.name}
        for inst in live.values():
            m = self.members.get(inst.id)
            if m is not None:
                if inst.last_used_at and (m.instance.last_used_at or 0) < inst.last_used_at:
                    m.instance.last_used_at = inst.last_used_at
            elif inst.state in (InstanceState.READY, InstanceState.PROVISIONING) and inst.ready_at:
                self.members[inst.id] = PoolMember(inst)
                log.info("pool: took in instance %s from the fleet", inst.id)
        if self._provider.can_create:
            for m in list(self.members.values()):
                if m.id not in live and m.leases == 0 and not m.retiring:
                    self.members.pop(m.id, None)
                    with contextlib.suppress(Exception):
                        await self._preparer.release(m.instance)
                    log.info("pool: instance %s left the fleet", m.id)
        self._dispatch()

    # --- retirement (the cleanup calls these) -------------------------------------------------------
    async def touch_busy(self) -> None:
        """Write "in use now" for every leased instance, so a cleanup running in another process (which
        sees only the ledger) never takes a job longer than the idle TTL for idleness."""
        now = self._clock()
        for m in list(self.members.values()):
            if m.leases > 0:
                m.instance.last_used_at = now
                await self._persist(m.instance)

    def idle_members(self, idle_ttl_s: float | None = None) -> list[PoolMember]:
        ttl = self.idle_ttl_s if idle_ttl_s is None else idle_ttl_s
        now = self._clock()
        out = []
        for m in self.members.values():
            last = m.instance.last_used_at or m.instance.ready_at or m.instance.created_at
            if m.leases == 0 and not m.retiring and not m.paused and now - last > ttl:
                out.append(m)
        return out

    async def retire(self, instance_id: str, *, reason: str, force: bool = False) -> bool:
        """Take an instance out of the pool and destroy it (static endpoints are only dropped from use
        when bad, never destroyed). Refuses while a job holds it, unless `force`."""
        m = self.members.get(instance_id)
        if m is None or (m.leases > 0 and not force):
            return False
        m.retiring = True
        self.members.pop(instance_id, None)
        with contextlib.suppress(Exception):
            await self._preparer.release(m.instance)
        if self._provider.can_create:
            m.instance.state = InstanceState.DESTROYING
            await self._provider.destroy(m.instance)
            m.instance.state = InstanceState.DESTROYED
            m.instance.destroyed_at = self._clock()
        log.info("pool: retired %s: %s", instance_id, reason)
        self._dispatch()
        return True

    def pause(self, instance_id: str, reason: str) -> PoolMember | None:
        """Give the instance no new leases until `resume` (leases held now stay)."""
        m = self.members.get(instance_id)
        if m is not None:
            m.paused = reason
        return m

    def resume(self, instance_id: str) -> None:
        m = self.members.get(instance_id)
        if m is not None:
            m.paused = None
        self._dispatch()

    def snapshot(self) -> dict[str, Any]:
        by_state: dict[str, int] = {}
        for m in self.members.values():
            by_state[m.instance.state.value] = by_state.get(m.instance.state.value, 0) + 1
        if self._rentals:
            by_state["creating"] = by_state.get("creating", 0) + len(self._rentals)
        now = self._clock()
        return {
            "instances": by_state,
            "leases": sum(m.leases for m in self.members.values()),
            "waiting": len(self._waiters),
            "rentals_in_flight": len(self._rentals),
            "spent_usd": sum(m.instance.spent_usd(now) for m in self.members.values()),
            "projected_spend_usd": self.projected_spend(),
        }
