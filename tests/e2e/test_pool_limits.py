"""The pool's limits seen from outside: at its maximum it queues instead of renting; the spend cap holds."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import b64, png_bytes, sim_api

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


def _body(prompt: str, **extra) -> dict:
    return {
        "image_base64": b64(png_bytes()),
        "prompt": prompt,
        "num_frames": 9,
        "width": 256,
        "height": 256,
        "seed": 1,
        **extra,
    }


async def test_pool_at_its_maximum_queues_jobs_instead_of_renting(tmp_path):
    # One instance takes two leases (one prompt running, one queued ahead in its ComfyUI), so with
    # POOL_MAX_INSTANCES=1 a third concurrent job has no slot: it must wait, not rent a second GPU.
    # The first job samples long enough (12 steps x 0.3 s) for the other two to reach their places even on
    # a loaded machine: the third can only move on once the first has ended.
    async with sim_api(tmp_path / "data", pool_max_instances=1, sim_step_delay_s=0.3) as sim:
        first = await sim.submit(_body("one", steps=12))
        await sim.wait_job(first["job_id"], lambda j: str(j["stage"] or "").startswith("sampling"))
        second = await sim.submit(_body("two"))
        third = await sim.submit(_body("three"))

        # The second job got the instance's queued-ahead slot; the third waits with a queue position
        # (its runner first looks in the cache, then writes `acquiring`: wait for that, not a fixed moment).
        await sim.wait_job(second["job_id"], lambda j: j["state"] == "running")
        waiting = await sim.wait_job(third["job_id"], lambda j: j["state"] != "queued")
        assert waiting["state"] == "acquiring" and waiting["queue_position"] == 1, waiting
        assert (await sim.job(first["job_id"]))["state"] == "running"  # so the slot was never free
        listed = (await sim.client.get("/jobs", params={"state": "acquiring"})).json()["jobs"]
        assert [j["job_id"] for j in listed] == [third["job_id"]]
        assert sim.instances_ever_created() == 1 and sim.services.pool.rents_started == 1

        done = [await sim.finished(j["job_id"]) for j in (first, second, third)]
        assert [j["state"] for j in done] == ["succeeded"] * 3, [j["error"] for j in done]
        assert {j["result"]["instance_id"] for j in done} == {str(next(iter(sim.emulator.instances)))}
        assert sim.instances_ever_created() == 1 and sim.services.pool.rents_started == 1
        assert all(j["result"]["cached"] is False for j in done)


async def test_spend_cap_below_one_instance_rents_nothing_and_fails_the_job_with_the_reason(tmp_path):
    # The cheapest life of a new instance is VAST_MAX_PRICE_PER_HOUR x IDLE_TTL_S (the reaper cannot take
    # it sooner): $1/h x 600 s = $0.17, above a $0.05 cap.
    async with sim_api(tmp_path / "data", spend_cap_usd=0.05) as sim:
        r = await sim.client.post("/vastai/generate-video", json=_body("too expensive", wait=30))
        assert r.status_code == 200, r.text
        job = r.json()
        assert job["state"] == "failed" and job["error"]["kind"] == "spend_cap"
        assert "spend cap of $0.05" in job["error"]["message"]
        assert "SPEND_CAP_USD" in job["error"]["message"]
        assert job["result"] is None and job["cost_usd"] in (None, 0.0)
        assert sim.instances_ever_created() == 0
        assert not [c for c in sim.emulator.calls if c.route == "create"]
        assert await sim.services.ledger.list(alive_only=False) == []
        assert sim.services.pool.rents_started == 0
        metrics = (await sim.client.get("/metrics")).text
        assert 'comfyfleet_jobs{state="failed"} 1.0' in metrics
