"""Restart recovery: the process dies mid-job (its tasks vanish, the GPU keeps going); a new process
re-attaches, re-queues once, or fails with a reason."""

import pytest

from app.jobs.models import JobState
from tests.jobs.fakes import FakeComfy, FakePreparer, FakeProvider
from tests.jobs.harness import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


async def _crash_while_running(tmp_path, provider, comfy, **kw):
    async with world(tmp_path, provider=provider, comfy=comfy, **kw) as w:
        job = await w.submit(seed=1)
        await w.wait_state(job.id, "running")
        await w.wait_prompt(job.id)
        await w.services.stop()  # like SIGKILL for the rows: nothing is written on the way down
        return job.id, w.ledger


async def test_restart_reattaches_to_the_prompt_still_on_the_instance(tmp_path):
    provider, comfy = FakeProvider(), FakeComfy(step_delay=0.05)
    job_id, ledger = await _crash_while_running(tmp_path, provider, comfy)
    async with world(tmp_path, provider=provider, comfy=comfy, ledger=ledger) as w2:
        job = await w2.wait(job_id)
        assert job.state == "succeeded", job.error_message
        assert comfy.runs == 1  # re-attached, not resubmitted
        assert job.attempts == 0 and job.result["cached"] is False
        assert provider.created == ["i1"]


async def test_restart_requeues_once_when_the_instance_is_gone(tmp_path):
    provider, comfy = FakeProvider(), FakeComfy(step_delay=0.05)
    job_id, ledger = await _crash_while_running(tmp_path, provider, comfy)
    for inst in provider.instances.values():  # the instance died while we were down
        inst.state = inst.state.DESTROYED
    async with world(tmp_path, provider=provider, comfy=comfy, ledger=ledger) as w2:
        job = await w2.wait(job_id)
        assert job.state == "succeeded" and job.attempts == 1
        assert job.instance_id == "i2" and comfy.runs == 2


async def test_restart_fails_with_reason_when_already_requeued_once(tmp_path):
    provider, comfy = FakeProvider(), FakeComfy(step_delay=0.05)
    job_id, ledger = await _crash_while_running(tmp_path, provider, comfy)
    for gpu in comfy.gpus.values():
        for pid in gpu.prompts:
            gpu.prompts[pid] = "cancelled"  # ComfyUI restarted and lost the prompt
    async with world(tmp_path, provider=provider, comfy=comfy, ledger=ledger, start=False) as w2:
        await w2.services.repo.set_fields(job_id, attempts=1)
        await w2.services.start()
        job = await w2.wait(job_id)
        assert job.state == "failed" and job.error_kind == "prompt_lost"
        assert "no longer knows prompt" in job.error_message


async def test_restart_requeues_jobs_that_never_reached_a_gpu(tmp_path):
    provider = FakeProvider(ready_delay=5)
    async with world(tmp_path, provider=provider) as w:
        job = await w.submit(seed=2)
        await w.wait_state(job.id, "acquiring")
        await w.services.stop()
    provider.ready_delay = 0
    async with world(tmp_path, provider=provider, ledger=w.ledger, preparer=FakePreparer()) as w2:
        done = await w2.wait(job.id)
        assert done.state == "succeeded" and done.attempts == 0
        assert "acquiring" in done.timings


async def test_restart_without_prompt_id_requeues_then_fails(tmp_path):
    async with world(tmp_path, start=False) as w:
        w.services.manager.spawn = lambda *a, **k: None
        job = await w.submit(seed=3)
        for st in (JobState.ACQUIRING, JobState.RUNNING):
            await w.services.repo.transition(job.id, st)
        await w.services.repo.set_fields(job.id, attempts=1)
        actions = await w.services.manager.recover()
        assert actions == [(job.id, "failed")]
        failed = await w.services.repo.require(job.id)
        assert failed.error_kind == "lost_on_restart" and "submit it again" in failed.error_message


async def test_cancel_committed_before_a_crash_stops_the_reattached_prompt(tmp_path):
    provider, comfy = FakeProvider(), FakeComfy(step_delay=0.2)
    job_id, ledger = await _crash_while_running(tmp_path, provider, comfy)
    async with world(tmp_path, provider=provider, comfy=comfy, ledger=ledger, start=False) as w2:
        await w2.services.repo.request_cancel(job_id)  # DELETE /jobs/{id} landed just before the crash
        prompt_id = (await w2.services.repo.require(job_id)).comfy_prompt_id
        await w2.services.start()
        job = await w2.wait(job_id)
        assert job.state == "cancelled", (job.state, job.error_message)
        [gpu] = comfy.gpus.values()
        assert prompt_id in gpu.cancels and gpu.prompts[prompt_id] == "cancelled"
