import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest

from app.cleanup import Cleaner
from app.config import Settings
from app.errors import ComfyfleetError
from app.jobs.models import JobState
from app.pool.provider import InstanceState
from tests.jobs.fakes import FakeComfy, FakeLedger, FakePreparer, FakeProvider, png_bytes
from tests.jobs.harness import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


async def test_idle_instance_is_destroyed_after_ttl(tmp_path):
    async with world(tmp_path, idle_ttl_s=0.05) as w:
        job = await w.wait((await w.submit(seed=1)).id)
        await asyncio.sleep(0.1)
        actions = await w.services.cleaner.run_once()
        idle = [a for a in actions if a.kind == "idle_instance"]
        assert [(a.target, a.ok) for a in idle] == [(job.instance_id, True)]
        assert w.provider.destroyed == [job.instance_id]
        assert job.instance_id not in w.services.pool.members
        recorded = await w.services.repo.cleanup_actions()
        assert any(r.kind == "idle_instance" and r.target == job.instance_id for r in recorded)


async def test_busy_instance_is_not_reaped(tmp_path):
    async with world(tmp_path, idle_ttl_s=0.0, comfy=FakeComfy(step_delay=0.1)) as w:
        job = await w.submit(seed=1)
        await w.wait_state(job.id, "running")
        actions = await w.services.cleaner.run_once()
        assert not [a for a in actions if a.kind == "idle_instance"]
        assert (await w.wait(job.id)).state == "succeeded"


async def test_orphan_with_our_label_unknown_to_ledger_is_destroyed(tmp_path):
    async with world(tmp_path) as w:
        orphan = w.provider.add(InstanceState.READY, record=False)
        known = w.provider.add(InstanceState.READY)
        w.services.pool.members.pop(known.id, None)
        actions = await w.services.cleaner.run_once()
        orphans = [a for a in actions if a.kind == "orphan_instance"]
        assert [a.target for a in orphans] == [orphan.id]
        assert orphan.id in w.provider.destroyed and known.id not in w.provider.destroyed


async def test_list_failure_is_an_alarm_not_an_empty_list(tmp_path):
    async with world(tmp_path) as w:
        w.provider.fail_list = ComfyfleetError("Vast answered 410 Gone")
        actions = await w.services.cleaner.run_once()
        [alarm] = [a for a in actions if a.kind == "list_failed"]
        assert not alarm.ok and "410" in alarm.error
        assert w.provider.destroyed == []


async def test_instance_stuck_booting_past_deadline_is_destroyed(tmp_path):
    ledger = FakeLedger()
    provider = FakeProvider()
    provider.ledger = ledger
    stuck = provider.add(InstanceState.BOOTING)
    stuck.created_at = time.time() - 10_000
    fresh = provider.add(InstanceState.BOOTING)
    async with world(
        tmp_path, provider=provider, ledger=ledger, instance_ready_timeout_s=100, provision_timeout_s=100
    ) as w:
        actions = await w.services.cleaner.run_once()
        assert [a.target for a in actions if a.kind == "stuck_instance"] == [stuck.id]
        assert provider.destroyed == [stuck.id] and fresh.id not in provider.destroyed
        assert ledger.rows[stuck.id].state is InstanceState.DESTROYED


async def test_dry_run_records_but_destroys_nothing(tmp_path):
    async with world(tmp_path, idle_ttl_s=0.0) as w:
        await w.wait((await w.submit(seed=1)).id)
        w.provider.add(InstanceState.READY, record=False)
        actions = await w.services.cleaner.run_once(dry_run=True)
        assert {a.kind for a in actions} >= {"idle_instance", "orphan_instance"}
        assert all(a.dry_run for a in actions)
        assert w.provider.destroyed == []
        assert all(r.dry_run for r in await w.services.repo.cleanup_actions())


async def test_job_stuck_past_timeout_is_failed_with_reason_and_gpu_stopped(tmp_path):
    async with world(tmp_path, comfy=FakeComfy(step_delay=1.0)) as w:
        job = await w.submit(seed=1)
        await w.wait_state(job.id, "running")
        await w.wait_prompt(job.id)
        w.services.cleaner.job_timeout_s = 0.0
        actions = await w.services.cleaner.run_once()
        assert [(a.kind, a.target, a.ok) for a in actions if a.kind == "stuck_job"] == [
            ("stuck_job", job.id, True)
        ]
        failed = await w.services.repo.require(job.id)
        assert failed.state == JobState.FAILED and failed.error_kind == "timeout"
        gpu = next(iter(w.comfy.gpus.values()))
        assert failed.comfy_prompt_id in gpu.cancels


async def test_out_of_process_cleanup_fails_stuck_job_in_database(tmp_path):
    async with world(tmp_path, start=False) as w:
        w.services.manager.spawn = lambda *a, **k: None
        job = await w.submit(seed=1)
        cleaner = Cleaner(w.services.repo, w.provider, w.ledger, job_timeout_s=0.0)
        actions = await cleaner.run_once()
        assert [a.kind for a in actions] == ["stuck_job"]
        assert (await w.services.repo.require(job.id)).error_kind == "timeout"


async def test_old_temp_files_are_pruned_active_ones_kept(tmp_path):
    async with world(tmp_path, start=False) as w:
        tmp = w.settings.data_dir / "tmp"
        old = tmp / "job_old"
        old.mkdir(parents=True)
        (old / "v.mp4").write_bytes(b"x")
        os.utime(old, (time.time() - 10**6, time.time() - 10**6))
        new = tmp / "job_new"
        new.mkdir()
        w.services.cleaner.tmp_max_age_s = 3600
        actions = await w.services.cleaner.run_once()
        assert [a.target for a in actions if a.kind == "temp_file"] == [str(old)]
        assert not old.exists() and new.exists()


async def test_old_input_images_are_pruned_unless_an_active_job_needs_them(tmp_path):
    async with world(tmp_path, start=False) as w:
        w.services.manager.spawn = lambda *a, **k: None
        active = await w.submit(seed=1)  # stays queued: its image must survive
        done = await w.submit(png_bytes(color=(9, 9, 9)), seed=2)
        await w.services.repo.transition(done.id, JobState.CANCELLED)
        old = time.time() - 10**7
        for job in (active, done):
            os.utime(job.request["image_path"], (old, old))
        actions = await w.services.cleaner.run_once()
        assert [a.target for a in actions if a.kind == "input_file"] == [done.request["image_path"]]
        assert Path(active.request["image_path"]).exists()  # noqa: ASYNC240
        assert not Path(done.request["image_path"]).exists()  # noqa: ASYNC240


class SnapshotLedger(FakeLedger):
    """Like the SQL ledger: another process reads what was last written, not the pool's live objects."""

    async def update(self, instance):
        self.updates += 1
        self.rows[instance.id] = dataclasses.replace(instance, meta=dict(instance.meta))


async def test_busy_instance_is_not_reaped_by_out_of_process_cleanup(tmp_path):
    # `comfyfleet cleanup` from cron has no pool: it sees only the ledger. An instance that sat idle and
    # then got a job must not look idle there (its lease was never written down).
    ledger = SnapshotLedger()
    async with world(tmp_path, ledger=ledger, comfy=FakeComfy(step_delay=0.2)) as w:
        await w.wait((await w.submit(seed=1)).id)
        await asyncio.sleep(0.3)
        job = await w.submit(seed=2)
        await w.wait_state(job.id, "running")
        cron = Cleaner(w.services.repo, w.provider, ledger, idle_ttl_s=0.25)
        actions = await cron.run_once()
        assert not [a for a in actions if a.kind in ("idle_instance", "stuck_instance")]
        assert w.provider.destroyed == []
        assert (await w.wait(job.id)).state == "succeeded"


async def test_job_longer_than_idle_ttl_keeps_its_instance_under_out_of_process_cleanup(tmp_path):
    ledger = SnapshotLedger()
    async with world(tmp_path, ledger=ledger, comfy=FakeComfy(step_delay=0.3)) as w:
        job = await w.submit(seed=1)
        await w.wait_state(job.id, "running")
        await asyncio.sleep(0.4)
        await w.services.cleaner.run_once()  # the server's own pass (every minute) says it is busy
        cron = Cleaner(w.services.repo, w.provider, ledger, idle_ttl_s=0.3)
        actions = await cron.run_once()
        assert not [a for a in actions if a.kind in ("idle_instance", "stuck_instance")]
        assert w.provider.destroyed == []
        assert (await w.wait(job.id)).state == "succeeded"


async def test_stuck_row_without_id_destroyed_leaves_creates_in_flight_alone(tmp_path):
    # Rows whose create has not answered yet have no id: marking "id ''" destroyed would close them all.
    from app.db import init_db, make_engine, make_sessionmaker
    from app.pool.ledger import InstanceLedger
    from app.pool.provider import Instance

    engine = make_engine(Settings().effective_database_url)
    await init_db(engine)
    ledger = InstanceLedger(make_sessionmaker(engine))
    stuck = Instance(provider="fake", id="", label="comfyfleet-test-stuck", created_at=time.time() - 10_000)
    in_flight = Instance(provider="fake", id="", label="comfyfleet-test-inflight")
    await ledger.record(stuck)
    await ledger.record(in_flight)
    provider = FakeProvider()
    try:
        async with world(tmp_path, start=False, provider=provider) as w:
            cleaner = Cleaner(w.services.repo, provider, ledger, instance_deadline_s=100)
            actions = await cleaner.run_once()
            assert [a.kind for a in actions if a.target == ""] == ["stuck_instance"]
            assert (await ledger.by_label(stuck.label)).state is InstanceState.DESTROYED
            assert (await ledger.by_label(in_flight.label)).state is InstanceState.CREATING
    finally:
        await engine.dispose()


async def test_ready_instance_being_reprovisioned_is_not_reaped_as_stuck_by_out_of_process_cleanup(tmp_path):
    # An old instance (adopted after a restart, or given a second workflow) is provisioned again while a
    # job holds it. It was ready long ago: it is not "stuck short of ready" past its boot deadline.
    ledger = SnapshotLedger()
    provider = FakeProvider()
    provider.ledger = ledger
    now = time.time()
    provider.add(InstanceState.READY, created_at=now - 10_000, ready_at=now - 9_000, last_used_at=now - 50)
    async with world(tmp_path, provider=provider, ledger=ledger, preparer=FakePreparer(delay=1.0)) as w:
        job = await w.submit(seed=1)
        await w.wait_state(job.id, "provisioning")
        await w.services.cleaner.run_once()  # the server's own pass
        cron = Cleaner(w.services.repo, provider, ledger, instance_deadline_s=100, idle_ttl_s=600)
        actions = await cron.run_once()
        assert not [a for a in actions if a.kind in ("idle_instance", "stuck_instance")]
        assert provider.destroyed == []
        assert (await w.wait(job.id)).state == "succeeded"
