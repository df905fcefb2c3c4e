import asyncio
import base64
import json

import pytest

from tests.api.conftest import api
from tests.jobs.fakes import FakeComfy, png_bytes

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

B64 = base64.b64encode(png_bytes(96, 64)).decode()


async def test_generate_answers_202_with_job_id_and_status_url(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "waves", "seed": 3})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["job_id"].startswith("job_") and body["status_url"].endswith(f"/jobs/{body['job_id']}")
        assert r.headers["location"] == body["status_url"]
        assert body["params"]["width"] == 720 and body["params"]["height"] == 480  # image aspect at 480p
        job = await c.world.wait(body["job_id"])
        r = await c.get(f"/jobs/{job.id}")
        got = r.json()
        assert got["state"] == "succeeded" and got["progress"] == 1.0
        assert got["result"]["video_url"] and got["result"]["seed"] == 3 and got["error"] is None


async def test_wait_true_returns_the_finished_job(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x", "wait": True})
        assert r.status_code == 200 and r.json()["state"] == "succeeded"


async def test_prefer_wait_header_holds_only_that_long(tmp_path):
    async with api(tmp_path, comfy=FakeComfy(step_delay=0.5)) as c:
        r = await c.post(
            "/vastai/generate-video",
            json={"image_base64": B64, "prompt": "x"},
            headers={"Prefer": "wait=0.2"},
        )
        assert r.status_code == 202 and r.json()["state"] != "succeeded"


async def test_queue_position_is_reported_for_waiting_jobs(tmp_path):
    async with api(tmp_path, pool_max_instances=1, comfy=FakeComfy(step_delay=0.2)) as c:
        ids = []
        for i in range(4):
            r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x", "seed": i})
            ids.append(r.json()["job_id"])
        await c.world.wait_state(ids[1], "running")
        positions = [(await c.get(f"/jobs/{i}")).json()["queue_position"] for i in ids]
        assert positions[:2] == [None, None] and positions[2:] == [1, 2]


async def test_list_jobs_filters_by_state(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x", "wait": True})
        done_id = r.json()["job_id"]
        r = await c.get("/jobs", params={"state": "succeeded"})
        assert [j["job_id"] for j in r.json()["jobs"]] == [done_id]
        assert (await c.get("/jobs", params={"state": "failed"})).json()["jobs"] == []
        assert (await c.get("/jobs", params={"state": "bogus"})).status_code == 422


async def test_delete_cancels_a_running_job(tmp_path):
    async with api(tmp_path, comfy=FakeComfy(step_delay=0.3)) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x"})
        job_id = r.json()["job_id"]
        await c.world.wait_state(job_id, "running")
        r = await c.delete(f"/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert r.json()["error"]["kind"] == "cancelled"


async def test_unknown_job_is_404(tmp_path):
    async with api(tmp_path) as c:
        assert (await c.get("/jobs/job_nope")).status_code == 404
        assert (await c.delete("/jobs/job_nope")).status_code == 404


async def test_events_stream_progress_then_end(tmp_path):
    async with api(tmp_path, comfy=FakeComfy(step_delay=0.02)) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x"})
        job_id = r.json()["job_id"]
        events = []
        async with c.stream("GET", f"/jobs/{job_id}/events") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            name = None
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if name == "end":
                        break
        names = [n for n, _ in events]
        assert names[0] == "snapshot" and names[-1] == "end" and "progress" in names
        assert events[-1][1]["state"] == "succeeded" and events[-1][1]["result"]["video_url"]
        stages = {d.get("stage") for n, d in events if n == "progress"}
        assert "sampling" in stages


async def test_events_of_a_finished_job_end_at_once(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x", "wait": True})
        text = (await asyncio.wait_for(c.get(f"/jobs/{r.json()['job_id']}/events"), 5)).text
        assert "event: snapshot" in text and "event: end" in text


async def test_metrics_report_jobs_stages_instances_and_spend(tmp_path):
    async with api(tmp_path) as c:
        await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x", "wait": True})
        text = (await c.get("/metrics")).text
        assert 'comfyfleet_jobs{state="succeeded"} 1.0' in text
        assert 'comfyfleet_job_stage_seconds_count{stage="running"} 1.0' in text
        assert 'comfyfleet_instances{state="ready"} 1.0' in text
        assert "comfyfleet_spend_usd" in text and "comfyfleet_projected_spend_usd" in text


async def test_reading_a_job_later_gives_fresh_result_urls(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x", "wait": True})
        stored = r.json()["result"]["video_url"]
        store = c.world.store
        original = store.url

        async def presign(key):  # a presigning store: every URL carries a new expiry
            return (await original(key)) + "?X-Amz-Expires=3600&sig=new"

        store.url = presign
        got = (await c.get(f"/jobs/{r.json()['job_id']}")).json()["result"]
        assert got["video_url"] != stored and got["video_url"].endswith(
            "video.mp4?X-Amz-Expires=3600&sig=new"
        )
        assert got["last_frame_url"].endswith("last_frame.png?X-Amz-Expires=3600&sig=new")


async def test_listing_jobs_later_gives_fresh_result_urls(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "x", "wait": True})
        assert r.json()["state"] == "succeeded"
        store = c.world.store
        original = store.url

        async def presign(key):  # the URLs stored at the job's end have expired by now
            return (await original(key)) + "?X-Amz-Expires=3600&sig=new"

        store.url = presign
        [listed] = (await c.get("/jobs")).json()["jobs"]
        assert listed["result"]["video_url"].endswith("video.mp4?X-Amz-Expires=3600&sig=new")
        assert listed["result"]["last_frame_url"].endswith("last_frame.png?X-Amz-Expires=3600&sig=new")
