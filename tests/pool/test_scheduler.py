import asyncio

from app.config import Settings, StaticEndpoint
from app.errors import ComfyfleetError
from app.pool.provider import InstanceState
from app.pool.static import StaticProvider
from tests.jobs.fakes import FakeComfy, FakePreparer, FakeProvider
from tests.jobs.harness import world


async def test_pool_at_max_queues_instead_of_renting(tmp_path):
    async with world(tmp_path, pool_max_instances=1, comfy=FakeComfy(step_delay=0.01)) as w:
        jobs = [await w.submit(seed=i) for i in range(4)]
        done = await asyncio.gather(*(w.wait(j.id) for j in jobs))
        assert [j.state for j in done] == ["succeeded"] * 4
        assert len(w.provider.created) == 1
        assert {j.instance_id for j in done} == {w.provider.created[0]}


async def test_rents_another_instance_when_jobs_wait_below_max(tmp_path):
    async with world(tmp_path, pool_max_instances=2, comfy=FakeComfy(step_delay=0.05)) as w:
        jobs = [await w.submit(seed=i) for i in range(4)]
        done = await asyncio.gather(*(w.wait(j.id) for j in jobs))
        assert all(j.state == "succeeded" for j in done)
        assert len(w.provider.created) == 2
        assert len({j.instance_id for j in done}) == 2


async def test_spend_cap_refuses_first_rental_with_actionable_error(tmp_path):
    # a new instance costs at least max $/h x idle TTL = 1.0 x 0.5 h = $0.50 > cap
    async with world(tmp_path, spend_cap_usd=0.4, vast_max_price_per_hour=1.0, idle_ttl_s=1800) as w:
        job = await w.wait((await w.submit()).id)
        assert job.state == "failed" and job.error_kind == "spend_cap"
        assert "SPEND_CAP_USD" in job.error_message
        assert w.provider.created == []


async def test_spend_cap_respected_with_live_instances_jobs_queue(tmp_path):
    # one instance fits under the cap, a second would not: jobs share the first
    async with world(
        tmp_path,
        spend_cap_usd=0.7,
        vast_max_price_per_hour=1.0,
        idle_ttl_s=1800,
        pool_max_instances=5,
        provider=FakeProvider(price=0.5),
        comfy=FakeComfy(step_delay=0.01),
    ) as w:
        jobs = [await w.submit(seed=i) for i in range(3)]
        done = await asyncio.gather(*(w.wait(j.id) for j in jobs))
        assert all(j.state == "succeeded" for j in done)
        assert len(w.provider.created) == 1
        assert w.services.pool.projected_spend() <= 0.7


async def test_queued_ahead_prompt_leaves_no_gpu_idle_gap(tmp_path):
    async with world(tmp_path, pool_max_instances=1, comfy=FakeComfy(step_delay=0.05)) as w:
        a = await w.submit(seed=1)
        b = await w.submit(seed=2)
        a, b = await w.wait(a.id), await w.wait(b.id)
        gpu = next(iter(w.comfy.gpus.values()))
        (pa, _sa, ea), (pb, sb, _eb) = gpu.executions
        assert (pa, pb) == (a.comfy_prompt_id, b.comfy_prompt_id)
        assert gpu.submitted_at[pb] < ea  # b was already queued on the GPU while a ran
        assert sb - ea < 0.05  # the GPU started b right after a


async def test_instances_are_reused_not_rented_per_job(tmp_path):
    async with world(tmp_path, pool_max_instances=3) as w:
        for i in range(3):
            assert (await w.wait((await w.submit(seed=i)).id)).state == "succeeded"
        assert len(w.provider.created) == 1
        member = next(iter(w.services.pool.members.values()))
        assert member.jobs_served == 3 and member.instance.last_used_at is not None
        assert w.ledger.updates > 0  # idle tracking reaches the ledger


async def test_rent_failures_fail_waiting_jobs_instead_of_hanging(tmp_path):
    provider = FakeProvider()
    provider.fail_create = ComfyfleetError("no offer matches the requirements")
    async with world(tmp_path, provider=provider) as w:
        job = await w.wait((await w.submit()).id)
        assert job.state == "failed" and job.error_kind == "rent_failed"
        assert "no offer matches" in job.error_message


async def test_device_fault_retires_instance_and_job_retries_on_a_new_one(tmp_path):
    class DeviceFault(ComfyfleetError):
        kind = "device_fault"
        retryable = True

    async with world(tmp_path, pool_max_instances=2) as w:
        first = await w.wait((await w.submit(seed=1)).id)
        bad = first.instance_id
        real_run = type(next(iter(w.comfy.gpus.values())))

        original = w.comfy.__class__.__call__
        calls = {"n": 0}

        def connector(target):
            cm = original(w.comfy, target)
            if target.url.endswith(bad) and calls["n"] == 0:
                calls["n"] += 1

                class Broken:
                    async def __aenter__(self):
                        session = await cm.__aenter__()

                        async def run(*a, **k):
                            raise DeviceFault("CUDA error: an illegal memory access was encountered")

                        session.run = run
                        return session

                    async def __aexit__(self, *exc):
                        return await cm.__aexit__(*exc)

                return Broken()
            return cm

        w.services.runner.comfy = connector
        job = await w.wait((await w.submit(seed=2)).id)
        assert real_run is not None
        assert job.state == "succeeded" and job.attempts == 1
        assert job.instance_id != bad
        assert bad in w.provider.destroyed


async def test_static_provider_never_rents_or_destroys(tmp_path):
    settings = Settings(
        static_endpoints=[StaticEndpoint(name="box", url="http://10.0.0.5:8188", price_per_hour=0.2)],
        provider="static",
    )
    provider = StaticProvider(settings)
    assert provider.can_create is False
    [inst] = await provider.list()
    assert inst.state is InstanceState.READY and inst.comfy.url == "http://10.0.0.5:8188"
    assert inst.comfy.via_tunnel is False
    async with world(tmp_path, provider=provider, preparer=FakePreparer()) as w:
        job = await w.wait((await w.submit()).id)
        assert job.state == "succeeded" and job.instance_id == "static-box"
        assert await w.services.pool.retire("static-box", reason="test") is True
        # a static endpoint is dropped from use, never destroyed; no rental replaces it
        job = await w.wait((await w.submit(seed=4)).id)
        assert job.state == "failed" and job.error_kind == "no_capacity"
        assert "STATIC_ENDPOINTS" in job.error_message


async def test_instance_that_cannot_be_prepared_is_retired_not_reused(tmp_path):
    prep = FakePreparer()
    prep.fail = ComfyfleetError("disk full on the instance: 12 GB free, 26 GB needed")
    async with world(tmp_path, preparer=prep, pool_max_instances=2) as w:
        job = await w.wait((await w.submit(seed=1)).id)
        assert job.state == "failed" and "disk full" in job.error_message
        assert w.provider.destroyed == ["i1"] and "i1" not in w.services.pool.members
        prep.fail = None
        ok = await w.wait((await w.submit(seed=2)).id)
        assert ok.state == "succeeded" and ok.instance_id == "i2"


async def test_failed_list_at_start_is_retried_and_does_not_stop_the_service(tmp_path):
    provider = FakeProvider()
    existing = provider.add(InstanceState.READY)
    provider.fail_list = ComfyfleetError("Vast answered 503")
    async with world(tmp_path, provider=provider, start=False) as w:
        await w.services.pool.start(retry_s=0.05)
        assert w.services.pool.members == {}
        provider.fail_list = None
        await asyncio.sleep(0.2)
        assert existing.id in w.services.pool.members
        await w.services.pool.stop()


async def test_rental_cancelled_while_booting_destroys_what_it_rented(tmp_path):
    # A stop (deploy, SIGTERM) mid-boot: the booting instance is never adopted after a restart (only ready
    # ones are), so left alive it would bill until the stuck-instance deadline.
    provider = FakeProvider(ready_delay=30.0)
    async with world(tmp_path, provider=provider) as w:
        await w.submit(seed=1)
        for _ in range(200):
            if provider.created:
                break
            await asyncio.sleep(0.01)
        assert provider.created == ["i1"]
        await w.services.pool.stop()
        assert provider.destroyed == ["i1"]


async def test_failed_list_at_start_rents_nothing_until_the_pool_knows_what_exists(tmp_path):
    # A list that fails is not "no instances": renting blind would put max_instances more GPUs next to
    # the ones already running (Vast's v0-list 410 made other tools do exactly that).
    provider = FakeProvider()
    existing = provider.add(InstanceState.READY)
    provider.fail_list = ComfyfleetError("Vast answered 410 Gone")
    async with world(tmp_path, provider=provider, start=False, pool_max_instances=1) as w:
        await w.services.pool.start(retry_s=0.3)
        job = await w.submit(seed=1)
        await asyncio.sleep(0.1)
        assert provider.created == []
        provider.fail_list = None
        done = await w.wait(job.id)
        assert done.state == "succeeded" and done.instance_id == existing.id
        assert provider.created == []
        await w.services.pool.stop()
