import asyncio

import pytest

from tests.jobs.fakes import FakeComfy, FakePreparer
from tests.jobs.harness import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


async def test_same_request_again_is_a_cache_hit_with_zero_gpu_time(tmp_path):
    async with world(tmp_path) as w:
        first = await w.wait((await w.submit(seed=11)).id)
        again = await w.wait((await w.submit(seed=11)).id)
        assert first.state == again.state == "succeeded"
        assert w.comfy.runs == 1
        assert again.result["cached"] is True and again.cost_usd == 0.0
        assert again.result["video_url"] == first.result["video_url"]
        assert set(again.timings) == {"queued"}  # queued -> succeeded, never near a GPU
        assert again.instance_id is None


async def test_random_seed_is_never_a_cache_hit(tmp_path):
    async with world(tmp_path) as w:
        await w.wait((await w.submit()).id)
        second = await w.wait((await w.submit()).id)
        assert second.result["cached"] is False
        assert w.comfy.runs == 2


async def test_different_image_is_a_miss(tmp_path):
    from tests.jobs.fakes import png_bytes

    async with world(tmp_path) as w:
        await w.wait((await w.submit(seed=3)).id)
        other = await w.wait((await w.submit(png_bytes(color=(1, 2, 3)), seed=3)).id)
        assert other.result["cached"] is False


async def test_concurrent_identical_requests_share_one_gpu_run(tmp_path):
    async with world(tmp_path, comfy=FakeComfy(step_delay=0.02)) as w:
        jobs = [await w.submit(seed=5) for _ in range(4)]
        done = await asyncio.gather(*(w.wait(j.id) for j in jobs))
        assert all(j.state == "succeeded" for j in done)
        assert w.comfy.runs == 1
        assert sorted(j.result["cached"] for j in done) == [False, True, True, True]


async def test_follower_runs_itself_when_the_leader_fails(tmp_path):
    prep = FakePreparer(delay=0.05)
    async with world(tmp_path, preparer=prep, comfy=FakeComfy(step_delay=0.01)) as w:
        leader = await w.submit(seed=9)
        await w.wait_state(leader.id, "provisioning")
        follower = await w.submit(seed=9)
        await w.services.manager.cancel(leader.id)
        done = await w.wait(follower.id)
        assert done.state == "succeeded" and done.result["cached"] is False


async def test_simulated_result_is_not_a_cache_hit_for_a_real_deployment(tmp_path):
    from tests.jobs.fakes import FakeStore

    store = FakeStore(tmp_path / "store")
    async with world(tmp_path, store=store) as sim:  # no Vast key: the simulated world
        first = await sim.wait((await sim.submit(seed=21)).id)
        assert first.result["simulated"] is True
    async with world(tmp_path, store=store, start=False) as real:  # same DATA_DIR, same store
        real.services.runner.config.simulated = False  # as with a Vast key or static endpoints set
        await real.services.start()
        again = await real.wait((await real.submit(seed=21)).id)
        assert again.state == "succeeded", again.error_message
        assert again.result["cached"] is False and again.result["simulated"] is False
        assert real.comfy.runs == 1
