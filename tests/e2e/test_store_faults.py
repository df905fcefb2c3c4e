"""The result store failing under the real product, through the simulated world's store fault switches
(`app.sim.store`): the world in this test's process, the product attached to it as `serve` is, so each
put takes its fault from the world over HTTP.

One test per failure mode: transient put errors (an R2 5xx / reset connection) are retried and the job
succeeds; a store down for longer than STORE_RETRY_S fails the job with a reason; a slow put is cut by
STORE_PUT_TIMEOUT_S and retried; a permanent refusal fails the job at once with a clear reason. The
instance is free again in every case (the outputs are stored after it is released), and the next job
runs on it.
"""

from __future__ import annotations

import httpx

from tests.e2e.conftest import b64, png_bytes, sim_api

BODY = {"image_base64": b64(png_bytes()), "num_frames": 9, "width": 256, "height": 256}


async def _run(sim, prompt: str) -> dict:
    r = await sim.client.post("/vastai/generate-video", json={**BODY, "prompt": prompt, "wait": 60})
    assert r.status_code in (200, 202), r.text
    job = r.json()
    return job if job["state"] in ("succeeded", "failed") else await sim.finished(job["job_id"], 60)


async def _instance_free_and_reused(sim, instance_id: str) -> None:
    """The instance is idle in the pool (not leaked, not leased) and the next job runs on it."""
    [inst] = (await sim.client.get("/instances")).json()["instances"]
    assert inst["id"] == instance_id and inst["state"] == "ready" and inst["in_pool"] is True
    assert inst["current_job"] is None
    job = await _run(sim, "the next one")
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["instance_id"] == instance_id
    assert sim.instances_ever_created() == 1


async def test_transient_store_put_errors_are_retried_and_the_job_succeeds(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        faults = sim.world.store_faults
        switches = sim.world.endpoints["vast_api_url"] + "/__sim/store/faults"
        async with httpx.AsyncClient(timeout=10) as h:  # the switches' HTTP face (`comfyfleet sim`)
            r = await h.post(switches, json={"transient_puts": 3})  # video + last frame, then a retry
            assert r.status_code == 200 and r.json()["transient_puts"] == 3
            assert (await h.post(switches, json={"nope": 1})).status_code == 400
        assert faults.transient_puts == 3
        job = await _run(sim, "transient")
        assert job["state"] == "succeeded", job["error"]
        assert faults.transient_puts == 0  # every fault was met by a put of this job
        assert job["attempts"] == 0  # retried in place, not run again on the GPU
        assert sim.instances_ever_created() == 1
        r = await sim.client.get(job["result"]["video_url"])
        assert r.status_code == 200 and len(r.content) == job["result"]["video_size_bytes"] > 0
        assert len(sim.comfy(job["result"]["instance_id"]).history) == 1  # one prompt on the GPU


async def test_store_down_longer_than_store_retry_s_fails_the_job_with_a_reason(tmp_path):
    async with sim_api(tmp_path / "data", store_retry_s=1.0) as sim:
        faults = sim.world.store_faults
        faults.transient_puts = 10_000
        job = await _run(sim, "down")
        faults.transient_puts = 0
        assert job["state"] == "failed"
        assert job["error"]["kind"] == "store_unavailable"
        message = job["error"]["message"]
        assert "could not store the result" in message and "503" in message and "check it" in message
        await _instance_free_and_reused(sim, _only_instance(sim))


async def test_slow_store_put_is_cut_by_the_put_timeout_and_retried(tmp_path):
    async with sim_api(tmp_path / "data", store_put_timeout_s=0.5) as sim:
        faults = sim.world.store_faults
        faults.slow_puts, faults.slow_s, faults.key_contains = 1, 3600.0, "video.mp4"
        job = await _run(sim, "slow")
        assert job["state"] == "succeeded", job["error"]
        assert faults.slow_puts == 0
        r = await sim.client.get(job["result"]["video_url"])
        assert r.status_code == 200 and len(r.content) == job["result"]["video_size_bytes"] > 0


async def test_permanent_store_error_fails_the_job_with_a_clear_reason_and_frees_the_instance(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        faults = sim.world.store_faults
        faults.permanent_puts, faults.key_contains = 1, "video.mp4"
        job = await _run(sim, "refused")
        assert job["state"] == "failed"
        assert job["error"]["kind"] == "store_auth_error"
        assert "R2_ACCESS_KEY_ID" in job["error"]["message"] and "403" in job["error"]["message"]
        assert faults.permanent_puts == 0
        faults.key_contains = None
        await _instance_free_and_reused(sim, _only_instance(sim))


def _only_instance(sim) -> str:
    [instance_id] = sim.emulator.instances
    return str(instance_id)
