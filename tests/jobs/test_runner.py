import asyncio
import contextlib

import pytest

from app.comfy.errors import ComfyUnavailable
from app.errors import ValidationError
from tests.jobs.fakes import FakeComfy, FakePreparer, FakeProvider
from tests.jobs.harness import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


async def test_job_succeeds_end_to_end_with_result_fields(tmp_path):
    async with world(tmp_path) as w:
        job = await w.submit(seed=7, num_frames=33)
        job = await w.wait(job.id)
        assert job.state == "succeeded", job.error_message
        r = job.result
        assert r["video_url"].endswith("/video.mp4") and r["last_frame_url"].endswith("/last_frame.png")
        assert (r["seed"], r["num_frames"], r["fps"], r["resolution"]) == (7, 33, 16, "640x480")
        assert r["cached"] is False and r["simulated"] is True and r["video_size_bytes"] > 0
        assert {"queued", "acquiring", "provisioning", "running", "uploading"} <= set(r["timings"])
        assert job.cost_usd is not None and job.cost_usd >= 0
        assert job.instance_id and job.comfy_prompt_id
        kinds = sorted(
            k.rsplit("/", 1)[-1] for k in w.store.objects if k.startswith("results/" + job.cache_key)
        )
        assert kinds == ["last_frame.png", "manifest.json", "video.mp4"]


async def test_random_seed_is_resolved_and_reported(tmp_path):
    async with world(tmp_path) as w:
        job = await w.wait((await w.submit()).id)
        assert job.result["seed"] != -1
        assert job.request["seed_requested"] == -1


async def test_instance_is_reused_across_jobs(tmp_path):
    async with world(tmp_path) as w:
        a = await w.wait((await w.submit(seed=1)).id)
        b = await w.wait((await w.submit(seed=2)).id)
        assert a.state == b.state == "succeeded"
        assert a.instance_id == b.instance_id
        assert len(w.provider.created) == 1
        assert len(w.preparer.calls) == 1  # provisioned once per instance and workflow
        assert "provisioning" not in b.timings  # second job went acquiring -> running


async def test_comfy_execution_error_fails_job_with_reason_and_keeps_instance(tmp_path):
    async with world(tmp_path) as w:
        await w.wait((await w.submit(seed=1)).id)
        next(iter(w.comfy.gpus.values())).fail_next = "UnetLoaderGGUF: GGUF magic invalid"
        job = await w.wait((await w.submit(seed=2)).id)
        assert job.state == "failed"
        assert job.error_kind == "comfy_execution_error" and "GGUF magic invalid" in job.error_message
        assert w.provider.destroyed == []


async def test_unexpected_exception_ends_job_failed_not_lost(tmp_path):
    prep = FakePreparer()
    prep.fail = RuntimeError("boom")
    async with world(tmp_path, preparer=prep) as w:
        job = await w.wait((await w.submit()).id)
        assert job.state == "failed" and job.error_kind == "internal" and "boom" in job.error_message


async def test_missing_input_image_fails_with_actionable_message(tmp_path):
    async with world(tmp_path, start=False) as w:
        w.services.manager.spawn = lambda *a, **k: None  # create without running
        job = await w.submit()
        import os

        os.unlink(job.request["image_path"])
        job = await w.services.runner.run(job.id)
        assert job.state == "failed" and job.error_kind == "input_missing"


async def test_cancel_during_sampling_stops_gpu_work(tmp_path):
    async with world(tmp_path, comfy=FakeComfy(step_delay=0.2)) as w:
        job = await w.submit()
        await w.wait_state(job.id, "running")
        await asyncio.sleep(0.05)
        job = await w.services.manager.cancel(job.id)
        assert job.state == "cancelled" and job.error_kind == "cancelled"
        gpu = next(iter(w.comfy.gpus.values()))
        assert gpu.cancels == [job.comfy_prompt_id]
        assert gpu.prompts[job.comfy_prompt_id] == "cancelled"
        assert w.store.objects == {}


async def test_cancel_while_queued_never_rents(tmp_path):
    provider = FakeProvider(ready_delay=0.5)
    async with world(tmp_path, provider=provider, pool_max_instances=1) as w:
        a = await w.submit(seed=1)
        await w.wait_state(a.id, "acquiring")
        job = await w.services.manager.cancel(a.id)
        assert job.state == "cancelled"
        assert w.comfy.runs == 0


async def test_job_timeout_fails_and_cancels_prompt(tmp_path):
    async with world(tmp_path, comfy=FakeComfy(step_delay=0.5), job_timeout_s=0.6) as w:
        job = await w.wait((await w.submit()).id, seconds=5)
        assert job.state == "failed" and job.error_kind == "timeout"
        assert "JOB_TIMEOUT_S" in job.error_message
        gpu = next(iter(w.comfy.gpus.values()))
        assert gpu.cancels == [job.comfy_prompt_id]


async def test_invalid_params_create_no_job(tmp_path):
    async with world(tmp_path) as w:
        try:
            await w.submit(num_frames=80)
        except ValidationError as exc:
            assert exc.field == "num_frames"
        else:
            raise AssertionError("expected a ValidationError")
        assert await w.services.repo.list() == []
        assert list((w.settings.data_dir / "inputs").glob("*.png")) == []


async def test_progress_events_reach_subscribers(tmp_path):
    async with world(tmp_path, comfy=FakeComfy(step_delay=0.02)) as w:
        seen = []
        w.services.manager.spawn = lambda *a, **k: None
        job = await w.submit()
        async with w.services.events.subscribe(job.id) as q:
            task = asyncio.create_task(w.services.runner.run(job.id))
            while True:
                ev = await asyncio.wait_for(q.get(), 5)
                seen.append(ev)
                if ev["event"] == "end":
                    break
            await task
        stages = [e.get("stage") for e in seen]
        assert "sampling" in stages and "provisioning" in stages
        progress = [e["progress"] for e in seen if e["event"] == "progress"]
        assert progress == sorted(progress) and progress[-1] > 0.9
        assert seen[-1]["state"] == "succeeded"


async def test_store_down_at_cache_lookup_fails_with_the_store_error(tmp_path):
    from app.store.base import StoreUnavailable

    async with world(tmp_path) as w:

        async def down(key):
            raise StoreUnavailable("R2 answered 503 after retries; try again later")

        w.store.head = down
        job = await w.wait((await w.submit(seed=1)).id)
        assert job.state == "failed" and job.error_kind == "store_unavailable"
        assert "503" in job.error_message and w.comfy.runs == 0


class UnreachableComfy(FakeComfy):
    """A FakeComfy whose ComfyUI at some URLs cannot be reached (as after the client's own retries):
    `down[url]` is how many more sessions there fail."""

    def __init__(self) -> None:
        super().__init__()
        self.down: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, target):
        if self.down.get(target.url, 0) > 0:
            self.down[target.url] -= 1
            raise ComfyUnavailable(f"ComfyUI at {target.url} did not answer")
        async with super().__call__(target) as session:
            yield session


async def test_comfy_unreachable_on_an_instance_for_jobs_in_a_row_retires_it_instead_of_draining_the_queue(
    tmp_path,
):
    comfy = UnreachableComfy()
    async with world(tmp_path, comfy=comfy) as w:
        first = await w.wait((await w.submit(seed=1)).id)
        assert first.state == "succeeded"
        url = next(iter(comfy.gpus))
        comfy.down[url] = 10  # it stays unreachable
        second = await w.wait((await w.submit(seed=2)).id)
        # two attempts, both unreachable: the job fails with the reason, and the instance is retired
        assert second.state == "failed" and second.error_kind == "comfy_unavailable"
        assert w.provider.destroyed == [first.instance_id]
        third = await w.wait((await w.submit(seed=3)).id)
        assert third.state == "succeeded" and third.instance_id != first.instance_id


async def test_comfy_unreachable_once_is_a_blip_the_job_is_retried_and_the_instance_kept(tmp_path):
    comfy = UnreachableComfy()
    async with world(tmp_path, comfy=comfy) as w:
        first = await w.wait((await w.submit(seed=1)).id)
        comfy.down[next(iter(comfy.gpus))] = 1
        second = await w.wait((await w.submit(seed=2)).id)
        assert second.state == "succeeded" and second.attempts == 1
        assert second.instance_id == first.instance_id and w.provider.destroyed == []
