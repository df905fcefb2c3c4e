"""Image in, MP4 out through the HTTP API; the same request again is a cache hit; cancel stops the GPU."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from PIL import Image

from tests.e2e.conftest import (
    b64,
    comfy_state,
    eventually,
    ffprobe,
    http_server,
    png_bytes,
    prompt_ids,
    sim_api,
)

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

STAGES = ("acquiring", "provisioning", "running", "uploading")


async def _check_video(sim, job: dict, tmp_path, *, frames: int, fps: int, size: tuple[int, int]) -> None:
    r = job["result"]
    assert job["state"] == "succeeded", job["error"]
    assert (r["num_frames"], r["fps"], r["resolution"]) == (frames, fps, f"{size[0]}x{size[1]}")
    assert (r["cached"], r["simulated"]) == (False, True)
    assert r["cost_usd"] > 0 and job["cost_usd"] == r["cost_usd"]
    assert all(r["timings"][stage] > 0 for stage in STAGES), r["timings"]
    assert r["timings"]["gpu_s"] > 0
    assert r["instance_id"] in {str(i) for i in sim.emulator.instances}

    # Stored in the local store, and the URL the API gave is fetchable through the app's /files route.
    video = await sim.client.get(r["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert len(video.content) == r["video_size_bytes"]
    key = r["video_url"].split("/files/", 1)[1]
    assert sim.services.store.path_for(key).stat().st_size == r["video_size_bytes"]
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    probe = ffprobe(path)
    assert probe["codec_name"] == "h264" and probe["pix_fmt"] == "yuv420p"
    assert (probe["width"], probe["height"]) == size
    assert int(probe["nb_read_frames"]) == frames
    assert probe["r_frame_rate"] == f"{fps}/1"

    frame = await sim.client.get(r["last_frame_url"])
    assert frame.status_code == 200
    (tmp_path / "last.png").write_bytes(frame.content)
    with Image.open(tmp_path / "last.png") as img:
        assert img.size == size


async def test_base64_image_in_h264_mp4_out_stored_and_fetchable(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        body = {
            "image_base64": b64(png_bytes(320, 240)),
            "prompt": "waves against the lighthouse",
            "num_frames": 9,
            "width": 256,
            "height": 256,
            "seed": 1234,
            "wait": 60,
        }
        r = await sim.client.post("/vastai/generate-video", json=body)
        assert r.status_code == 200, r.text  # held until done
        job = r.json()
        assert job["result"]["seed"] == 1234
        await _check_video(sim, job, tmp_path, frames=9, fps=16, size=(256, 256))
        assert sim.instances_ever_created() == 1


async def test_image_url_from_a_loopback_server_in_mp4_out(tmp_path):
    image = png_bytes(200, 150)
    fetched: list[str] = []

    async def serve_png(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=image, content_type="image/png")

    async with http_server({"/lighthouse.png": serve_png}) as origin, sim_api(tmp_path / "data") as sim:
        job = await sim.submit(
            {
                "image_url": f"{origin}/lighthouse.png",
                "prompt": "fog rolls in",
                "num_frames": 17,
                "width": 320,
                "height": 256,
                "fps": 12,
            }
        )
        assert job["state"] in ("queued", "acquiring") and job["status_url"].endswith(job["job_id"])
        job = await sim.finished(job["job_id"])
        assert fetched == ["/lighthouse.png"]
        assert isinstance(job["result"]["seed"], int) and job["result"]["seed"] >= 0  # -1 resolved
        await _check_video(sim, job, tmp_path, frames=17, fps=12, size=(320, 256))


async def test_same_request_again_is_a_cache_hit_with_zero_gpu_time(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        body = {
            "image_base64": b64(png_bytes()),
            "prompt": "a calm sea",
            "num_frames": 9,
            "width": 256,
            "height": 256,
            "seed": 7,
            "wait": 60,
        }
        first = (await sim.client.post("/vastai/generate-video", json=body)).json()
        assert first["state"] == "succeeded" and first["result"]["cached"] is False
        comfy = sim.comfy(first["result"]["instance_id"])
        prompts_before = await prompt_ids(comfy)
        assert len(prompts_before) == 1

        t0 = time.monotonic()
        r = await sim.client.post("/vastai/generate-video", json=body)
        elapsed = time.monotonic() - t0
        again = r.json()
        assert r.status_code == 200 and again["state"] == "succeeded", again
        assert again["job_id"] != first["job_id"]
        res = again["result"]
        assert res["cached"] is True and res["cost_usd"] == 0.0 and again["cost_usd"] == 0.0
        assert res["timings"].get("gpu_s", 0.0) == 0.0 and res["instance_id"] is None
        assert "running" not in again["timings"] and "provisioning" not in again["timings"]
        assert res["video_url"] == first["result"]["video_url"]
        assert (res["seed"], res["num_frames"], res["resolution"]) == (7, 9, "256x256")
        assert await prompt_ids(comfy) == prompts_before  # no new ComfyUI prompt
        assert sim.instances_ever_created() == 1
        assert elapsed < 2.0, f"a cache hit took {elapsed:.2f} s"
        assert (await sim.client.get(res["video_url"])).status_code == 200


async def test_random_seed_is_never_a_cache_hit_unless_reuse_cached(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        body = {
            "image_base64": b64(png_bytes()),
            "prompt": "a random seed",
            "num_frames": 9,
            "width": 256,
            "height": 256,
            "seed": -1,
            "wait": 60,
        }
        first = (await sim.client.post("/vastai/generate-video", json=body)).json()
        assert first["state"] == "succeeded" and first["result"]["cached"] is False
        second = (await sim.client.post("/vastai/generate-video", json=body)).json()
        assert second["state"] == "succeeded" and second["result"]["cached"] is False
        assert second["result"]["seed"] != first["result"]["seed"]
        comfy = sim.comfy(first["result"]["instance_id"])
        rendered = await prompt_ids(comfy)
        assert len(rendered) == 2

        reused = (await sim.client.post("/vastai/generate-video", json={**body, "reuse_cached": True})).json()
        res = reused["result"]
        assert reused["state"] == "succeeded" and res["cached"] is True and res["cost_usd"] == 0.0
        assert res["seed"] == second["result"]["seed"]  # the latest result, with the seed that made it
        assert res["video_url"] == second["result"]["video_url"]
        assert await prompt_ids(comfy) == rendered  # no new ComfyUI prompt


async def test_identical_concurrent_requests_run_once_on_the_gpu(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        body = {
            "image_base64": b64(png_bytes()),
            "prompt": "twice at once",
            "num_frames": 9,
            "width": 256,
            "height": 256,
            "seed": 5,
        }
        a, b = await asyncio.gather(sim.submit(body), sim.submit(body))
        done = [await sim.finished(a["job_id"]), await sim.finished(b["job_id"])]
        assert [j["state"] for j in done] == ["succeeded", "succeeded"], [j["error"] for j in done]
        assert sorted(j["result"]["cached"] for j in done) == [False, True]
        assert done[0]["result"]["video_url"] == done[1]["result"]["video_url"]
        assert len(await prompt_ids(sim.comfy(next(iter(sim.emulator.instances))))) == 1
        assert sim.instances_ever_created() == 1


async def test_cancel_during_sampling_interrupts_the_comfyui_prompt(tmp_path):
    async with sim_api(tmp_path / "data", sim_step_delay_s=0.25) as sim:
        job = await sim.submit(
            {
                "image_base64": b64(png_bytes()),
                "prompt": "storm",
                "num_frames": 9,
                "width": 256,
                "height": 256,
                "steps": 8,
            }
        )
        job_id = job["job_id"]
        job = await sim.wait_job(job_id, lambda j: str(j["stage"] or "").startswith("sampling"))
        assert job["state"] == "running"
        comfy = sim.comfy(next(iter(sim.emulator.instances)))
        queue, _ = await comfy_state(comfy)
        [running] = queue["queue_running"]
        prompt_id = running[1]

        t0 = time.monotonic()
        r = await sim.client.delete(f"/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        assert time.monotonic() - t0 < 5
        job = await sim.job(job_id)
        assert job["state"] == "cancelled" and job["error"]["kind"] == "cancelled"
        assert job["result"] is None

        # The GPU really stopped: ComfyUI honours an interrupt at its next sampler step (as the real one
        # does), then nothing is queued or running and the prompt ended interrupted, not done.
        async def idle() -> bool:
            queue, _ = await comfy_state(comfy)
            return queue["queue_running"] == [] and queue["queue_pending"] == []

        await eventually(idle, within_s=2.0, what="the interrupted prompt to leave the GPU")
        _, history = await comfy_state(comfy)
        entry = history[prompt_id]
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]
        assert entry["outputs"] == {}


async def test_cancel_of_a_job_queued_ahead_on_the_gpu_removes_its_prompt_from_comfyui(tmp_path):
    # One instance, two jobs: the second job's prompt waits in that ComfyUI's queue behind the first.
    async with sim_api(tmp_path / "data", pool_max_instances=1, sim_step_delay_s=0.25) as sim:
        body = {"image_base64": b64(png_bytes()), "num_frames": 9, "width": 256, "height": 256, "steps": 8}
        first = await sim.submit({**body, "prompt": "runs"})
        await sim.wait_job(first["job_id"], lambda j: str(j["stage"] or "").startswith("sampling"))
        second = await sim.submit({**body, "prompt": "waits on the GPU"})
        comfy = sim.comfy(next(iter(sim.emulator.instances)))

        async def queued_ahead() -> bool:
            queue, _ = await comfy_state(comfy)
            return len(queue["queue_pending"]) == 1

        await eventually(queued_ahead, what="the second prompt in ComfyUI's queue")
        queue, _ = await comfy_state(comfy)
        [[_, running_id, *_]] = queue["queue_running"]
        [[_, pending_id, *_]] = queue["queue_pending"]

        r = await sim.client.delete(f"/jobs/{second['job_id']}")
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        queue, history = await comfy_state(comfy)
        assert queue["queue_pending"] == [] and pending_id not in history  # removed, never ran
        assert [item[1] for item in queue["queue_running"]] == [running_id]  # the other job untouched

        done = await sim.finished(first["job_id"])
        assert done["state"] == "succeeded", done["error"]
        assert set(await prompt_ids(comfy)) == {running_id}
