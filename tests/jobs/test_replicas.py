"""Replicas on one database (app.jobs.claims, app.pool.locks), in one process: two whole control planes
built from the fakes share the database, the provider, the ledger and the GPUs, as two `comfyfleet serve`
share PostgreSQL and Vast. A "killed" replica stops without writing anything (its claims simply lapse).

Nothing here waits on time passing: leases are judged by an injected clock where the test is about
lapsing, and otherwise every wait is for a condition (a job's state, a waiter on a row)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from app.jobs.claims import JobClaims, enable_replicas
from app.jobs.models import JobState
from app.pool.locks import CLEANUP_LEASE, FleetGate, FleetLocks
from app.pool.provider import Instance, InstanceState
from tests.jobs.fakes import FakeComfy, FakeLedger, FakeProvider, FakeSession, FakeStore, png_bytes
from tests.jobs.harness import create_tables, world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

FAST = {
    "replicas": "on",
    "replica_heartbeat_s": 0.05,
    "replica_poll_s": 0.05,
    # long enough that a live replica on a loaded machine never loses a claim by being slow, short
    # enough that a dead one's jobs move on quickly
    "replica_lease_s": 2.0,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class HeldSession(FakeSession):
    async def _execute(self, prompt_id: str) -> dict:
        await self.comfy.go.wait()  # submitted to ComfyUI, but it only runs once the test says so
        return await super()._execute(prompt_id)


class HeldComfy(FakeComfy):
    def __init__(self) -> None:
        super().__init__(step_delay=0.01)
        self.go = asyncio.Event()

    @contextlib.asynccontextmanager
    async def __call__(self, target):
        yield HeldSession(self, self.gpu(target.url))


@contextlib.asynccontextmanager
async def replica(tmp_path, name: str, **kw):
    async with world(tmp_path, start=False, replica_id=name, **FAST, **kw) as w:
        enable_replicas(w.services, w.settings, w.services.engine)
        await w.services.start()
        yield w


async def kill(w) -> None:
    """Stop a replica the way SIGKILL does for the database: no hand-over is written."""

    async def nothing() -> None:
        return None

    w.services.replica.after_jobs_stopped = nothing
    await w.services.stop()


async def until(pred, what: str, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while True:
        value = await pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


async def submit(w, **raw):
    raw.setdefault("prompt", "a cat surfing")
    img = await w.services.intake.from_bytes(png_bytes(), "image_base64")
    return await w.services.submit(raw, img)


# --- claims and leases ---------------------------------------------------------------------------
async def test_claims_are_exclusive_renewed_and_taken_over_when_they_lapse(database, tmp_path):
    clock = Clock()
    engine = await create_tables(database.url)
    try:
        async with world(tmp_path, start=False) as w:  # only its repo, to write rows as the service does
            ids = [(await w.services.repo.create(workflow="wf", request={})).id for _ in range(40)]
        a = JobClaims(engine, "a", lease_s=30, clock=clock)
        b = JobClaims(engine, "b", lease_s=30, clock=clock)
        got_a, got_b = await asyncio.gather(a.claim_orphans(), b.claim_orphans())
        assert not set(got_a) & set(got_b) and set(got_a) | set(got_b) == set(ids)  # each job once
        assert await a.claim_orphans() == [] and await b.claim_orphans() == []
        assert not await b.claim(got_a[0]) if got_a else not await a.claim(got_b[0])

        clock.now += 20
        assert await a.heartbeat(got_a) == set(got_a)  # renewed to now + 30
        clock.now += 20  # b's claims (taken at 0) lapsed at 30; a's were renewed at 20 until 50
        taken = await a.claim_orphans()
        assert set(taken) == set(got_b)
        assert await b.heartbeat(got_b) == set()  # b learns it lost them
        assert await a.heartbeat(ids) == set(ids)
    finally:
        await engine.dispose()


async def test_cleanup_lease_has_one_holder_and_hands_over(database, tmp_path):
    clock = Clock()
    engine = await create_tables(database.url)
    try:
        a, b = FleetLocks(engine, "a", clock=clock), FleetLocks(engine, "b", clock=clock)
        first = await asyncio.gather(a.try_acquire(CLEANUP_LEASE, 30), b.try_acquire(CLEANUP_LEASE, 30))
        assert sorted(first) == [False, True]  # racing: exactly one
        holder, other = (a, b) if first[0] else (b, a)
        assert await holder.try_acquire(CLEANUP_LEASE, 30)  # renewing
        assert not await other.try_acquire(CLEANUP_LEASE, 30)
        assert await other.holder_of(CLEANUP_LEASE) == holder.holder

        await holder.release(CLEANUP_LEASE)  # a graceful stop hands over at once
        assert await other.try_acquire(CLEANUP_LEASE, 30)
        assert not await holder.try_acquire(CLEANUP_LEASE, 30)

        clock.now += 29  # the new holder dies: nobody renews
        assert not await holder.try_acquire(CLEANUP_LEASE, 30)
        clock.now += 2
        assert await holder.try_acquire(CLEANUP_LEASE, 30)  # lapsed: taken over
        assert await holder.holder_of(CLEANUP_LEASE) == holder.holder
    finally:
        await engine.dispose()


async def test_only_the_cleanup_lease_holder_runs_the_cleanup(tmp_path):
    async with (
        replica(tmp_path, "r1") as r1,
        replica(tmp_path, "r2", db_url=r1.db_url, provider=r1.provider, ledger=r1.ledger) as r2,
    ):
        turns = await asyncio.gather(r1.services.replica.cleanup_turn(), r2.services.replica.cleanup_turn())
        assert sorted(turns) == [False, True]
        leader, follower = (r1, r2) if turns[0] else (r2, r1)
        await leader.services.stop()  # graceful: the lease is released
        assert await follower.services.replica.cleanup_turn()


async def test_two_fleet_gates_racing_for_the_last_slot_admit_one(database, tmp_path):
    engine = await create_tables(database.url)
    ledger = FakeLedger()
    ledger.rows["i1"] = Instance(provider="fake", id="i1", label="l1", state=InstanceState.READY)
    rented: list[str] = []
    try:

        async def rent(holder: str) -> str | None:
            gate = FleetGate(
                FleetLocks(engine, holder),
                ledger,
                max_instances=2,
                spend_cap_usd=100,
                max_price_per_hour=1,
                idle_ttl_s=600,
            )
            async with gate.admit("fake") as refusal:
                if refusal is None:
                    await asyncio.sleep(0.05)  # the create call (its ledger row is written first)
                    ledger.rows[holder] = Instance(
                        provider="fake", id=holder, label=holder, state=InstanceState.CREATING
                    )
                    rented.append(holder)
                return refusal

        refusals = await asyncio.gather(*(rent(f"r{i}") for i in range(4)))
        assert len(rented) == 1 and sum(r is None for r in refusals) == 1

        # one replica renting for several needs at once: its rentals take turns too (the lease is the
        # replica's, so without that they would all count the same fleet and all rent)
        gate = FleetGate(
            FleetLocks(engine, "r9"),
            ledger,
            max_instances=4,
            spend_cap_usd=100,
            max_price_per_hour=1,
            idle_ttl_s=600,
        )
        before = len(rented)

        async def rent_same(n: int) -> None:
            async with gate.admit("fake") as refusal:
                if refusal is None:
                    await asyncio.sleep(0.02)
                    ledger.rows[f"s{n}"] = Instance(
                        provider="fake", id=f"s{n}", label=f"s{n}", state=InstanceState.CREATING
                    )
                    rented.append(f"s{n}")

        await asyncio.gather(*(rent_same(n) for n in range(5)))
        assert len(rented) - before == 2  # 2 live before: up to the maximum of 4, not 5 more
        assert all("maximum of 2" in r for r in refusals if r is not None)
    finally:
        await engine.dispose()


# --- whole replicas ------------------------------------------------------------------------------
async def test_killed_replica_s_running_job_is_reattached_by_another_and_nothing_is_rented_twice(tmp_path):
    comfy, provider, ledger, store = HeldComfy(), FakeProvider(), FakeLedger(), FakeStore(tmp_path / "store")
    shared = {"provider": provider, "ledger": ledger, "comfy": comfy, "store": store}
    async with replica(tmp_path, "r1", **shared) as r1:
        async with replica(tmp_path, "r2", db_url=r1.db_url, **shared) as r2:
            job = await submit(r1, seed=7)
            await r1.wait_prompt(job.id)  # on the GPU
            await kill(r1)
            comfy.go.set()
            done = await r2.wait(job.id, 60)
            assert done.state == "succeeded", done.error_message
            assert done.attempts == 0 and comfy.runs == 1  # re-attached, not run again
            assert provider.created == ["i1"]  # the survivor rented nothing
            assert (job.id, "reattaching") in r2.services.replica.reclaimed
            assert done.result["instance_id"] == "i1"


async def test_killed_replica_s_waiting_jobs_run_on_the_survivor(tmp_path):
    comfy, provider, ledger, store = HeldComfy(), FakeProvider(), FakeLedger(), FakeStore(tmp_path / "store")
    shared = {"provider": provider, "ledger": ledger, "comfy": comfy, "store": store}
    async with replica(tmp_path, "r1", pool_max_instances=1, **shared) as r1:
        async with replica(tmp_path, "r2", db_url=r1.db_url, pool_max_instances=1, **shared) as r2:
            jobs = [await submit(r1, seed=s) for s in range(5)]  # 2 on the GPU's slots, 3 waiting
            await r1.wait_prompt(jobs[0].id)
            await kill(r1)
            comfy.go.set()
            ended = [await r2.wait(j.id, 60) for j in jobs]
            assert [j.state for j in ended] == ["succeeded"] * 5, [j.error_message for j in ended]
            assert provider.created == ["i1"]
            assert comfy.runs == 5


async def test_two_replicas_racing_for_the_last_slot_rent_once_and_share_it(tmp_path):
    comfy, provider, ledger, store = HeldComfy(), FakeProvider(), FakeLedger(), FakeStore(tmp_path / "store")
    shared = {"provider": provider, "ledger": ledger, "comfy": comfy, "store": store}
    async with replica(tmp_path, "r1", pool_max_instances=1, **shared) as r1:
        async with replica(tmp_path, "r2", db_url=r1.db_url, pool_max_instances=1, **shared) as r2:
            j1, j2 = await asyncio.gather(submit(r1, seed=1), submit(r2, seed=2))
            comfy.go.set()
            e1, e2 = await r1.wait(j1.id, 60), await r2.wait(j2.id, 60)
            assert (e1.state, e2.state) == ("succeeded", "succeeded"), (e1.error_message, e2.error_message)
            assert provider.created == ["i1"]  # one rental for the fleet, used by both replicas
            assert e1.result["instance_id"] == e2.result["instance_id"] == "i1"


async def test_identical_requests_on_two_replicas_run_once(tmp_path):
    comfy, provider, ledger, store = HeldComfy(), FakeProvider(), FakeLedger(), FakeStore(tmp_path / "store")
    shared = {"provider": provider, "ledger": ledger, "comfy": comfy, "store": store}
    async with replica(tmp_path, "r1", **shared) as r1:
        async with replica(tmp_path, "r2", db_url=r1.db_url, **shared) as r2:
            lead = await submit(r1, seed=5)
            await r1.wait_prompt(lead.id)
            follower = await submit(r2, seed=5)
            coalescer = r2.services.runner.coalescer

            async def following():
                return bool(coalescer._watchers)

            await until(following, "the second replica waits on the first one's in-flight key")
            job = await r2.services.repo.require(follower.id)
            assert job.state == JobState.QUEUED.value  # waiting, not on a GPU
            comfy.go.set()
            a, b = await r1.wait(lead.id, 60), await r2.wait(follower.id, 60)
            assert (a.state, b.state) == ("succeeded", "succeeded")
            assert comfy.runs == 1 and a.result["cached"] is False and b.result["cached"] is True
            assert b.result["video_url"] == a.result["video_url"]


async def test_waits_and_streams_on_one_replica_see_a_job_run_by_another(tmp_path):
    comfy, provider, ledger, store = HeldComfy(), FakeProvider(), FakeLedger(), FakeStore(tmp_path / "store")
    shared = {"provider": provider, "ledger": ledger, "comfy": comfy, "store": store}
    async with replica(tmp_path, "r1", **shared) as r1:
        async with replica(tmp_path, "r2", db_url=r1.db_url, **shared) as r2:
            job = await submit(r1, seed=9)
            await r1.wait_prompt(job.id)
            seen: list[dict] = []
            async with r2.services.events.subscribe(job.id) as q:
                first = await asyncio.wait_for(q.get(), 30)  # polled from the row r1 writes
                seen.append(first)
                assert first["event"] == "progress" and first["state"] == "running"
                waiter = asyncio.create_task(r2.services.manager.wait(job.id, 600))
                comfy.go.set()
                while seen[-1]["event"] != "end":
                    seen.append(await asyncio.wait_for(q.get(), 30))
            assert seen[-1]["state"] == "succeeded"
            ended = await asyncio.wait_for(waiter, 30)  # long before its 5 s re-read, by the poll
            assert ended.state == "succeeded"


async def test_a_token_s_rate_is_counted_across_replicas(database, tmp_path):
    from app.jobs.claims import SharedRates

    clock = Clock()
    engine = await create_tables(database.url)
    try:
        a, b = SharedRates(engine, clock=clock), SharedRates(engine, clock=clock)
        results = await asyncio.gather(*((a if i % 2 else b).hit("ci", 10, 60) for i in range(14)))
        assert sum(ok for ok, _ in results) == 10  # 10 per minute for the fleet, not per replica
        refused = [wait for ok, wait in results if not ok]
        assert all(1 <= w <= 60 for w in refused)
        assert (await a.hit("other", 10, 60))[0]  # per token
        clock.now += 120  # two windows later nothing counts any more
        assert (await b.hit("ci", 10, 60))[0]
    finally:
        await engine.dispose()


async def test_a_due_webhook_is_taken_by_one_replica(database, tmp_path):
    engine = await create_tables(database.url)
    try:
        async with world(tmp_path, start=False) as w:
            job = await w.services.repo.create(workflow="wf", request={}, webhook_url="https://example.com/h")
            await w.services.repo.set_fields(job.id, webhook_status="pending", webhook_next_at=time.time())
            [due] = await w.services.repo.webhooks_due(time.time())
        a, b = JobClaims(engine, "a"), JobClaims(engine, "b")
        taken = await asyncio.gather(a.take_webhook(due), b.take_webhook(due))
        assert sorted(taken) == [False, True]
        async with world(tmp_path, start=False) as w:
            assert (
                await w.services.repo.webhooks_due(time.time()) == []
            )  # not due again until the lease lapses
    finally:
        await engine.dispose()


async def test_the_cleanup_loop_runs_only_while_its_replica_holds_the_lease(tmp_path):
    async with world(tmp_path, start=False) as w:
        cleaner = w.services.cleaner
        asked: list[bool] = []
        ran: list[int] = []
        holder = {"me": False}

        async def gate() -> bool:
            asked.append(holder["me"])
            return holder["me"]

        async def run_once(**_kw):
            ran.append(len(asked))
            return []

        cleaner.gate, cleaner.run_once = gate, run_once
        loop = asyncio.create_task(cleaner.run_forever(0.001))
        try:

            async def asked_thrice():
                return len(asked) >= 3

            await until(asked_thrice, "the loop asks for the lease")
            assert ran == []  # another replica holds it
            holder["me"] = True

            async def ran_once():
                return bool(ran)

            await until(ran_once, "the loop runs once it holds the lease")
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop


async def test_a_held_lease_is_renewed_while_its_block_runs(database, tmp_path):
    from sqlalchemy import select

    from app.pool.locks import FleetLease

    engine = await create_tables(database.url)
    try:
        a, b = FleetLocks(engine, "a"), FleetLocks(engine, "b")

        async def until_of() -> float:
            async with engine.connect() as conn:
                return (await conn.execute(select(FleetLease.until).where(FleetLease.name == "x"))).scalar()

        async with a.hold("x", 0.6, wait_s=0) as got:
            assert got
            first = await until_of()

            async def renewed():
                return await until_of() > first

            await until(renewed, "the holder renews its lease")  # a block longer than the TTL keeps it
        assert await b.try_acquire("x", 30)  # released when the block ends
    finally:
        await engine.dispose()
