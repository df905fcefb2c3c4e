"""Stories end to end in the simulated world: chained segments, one MP4 joined by packet copy, per-segment
caching, cancel mid-story, a failed segment, and bad input that creates nothing."""

from __future__ import annotations

import hashlib
import io

import av
import numpy as np
import pytest
from PIL import Image

from app.comfy.stitch import video_packets
from app.workflows.trim import TRIM_NODE_CLASS, TRIM_NODE_ID
from tests.e2e.conftest import b64, comfy_state, eventually, ffprobe, png_bytes, prompt_ids, sim_api

FRAMES = 9
SIZE = {"width": 256, "height": 256}


def story_body(*prompts: str, seed: int = 7, **extra) -> dict:
    return {
        "image_base64": b64(png_bytes(320, 240)),
        "seed": seed,
        **SIZE,
        "segments": [{"prompt": p, "num_frames": FRAMES} for p in prompts],
        **extra,
    }


async def _fetch(sim, url: str, path):
    r = await sim.client.get(url)
    assert r.status_code == 200, (url, r.status_code)
    path.write_bytes(r.content)
    return path


def _frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]


def _png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.mark.usefixtures("database")  # the database matters here: runs on SQLite and on PostgreSQL
async def test_three_segment_story_is_one_mp4_of_sum_minus_two_frames_joined_by_copying_packets(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        r = await sim.client.post("/vastai/generate-story", json=story_body("dawn", "noon", "dusk", wait=60))
        assert r.status_code == 200, r.text
        story = r.json()
        assert story["state"] == "succeeded", story["error"]
        segs = story["segments"]
        assert [s["state"] for s in segs] == ["succeeded"] * 3
        assert [s["seed"] for s in segs] == [7, 8, 9]  # story seed + index
        assert [s["first_frame_dropped"] for s in segs] == [False, True, True]
        assert [s["frames_in_story"] for s in segs] == [FRAMES, FRAMES - 1, FRAMES - 1]
        assert all(s["video_url"] and s["last_frame_url"] and s["cost_usd"] > 0 for s in segs)
        assert all(s["timings"]["gpu_s"] > 0 for s in segs)

        result = story["result"]
        assert result["num_frames"] == 3 * FRAMES - 2 and result["simulated"] is True
        assert result["join"]["method"] == "packet copy" and result["join"]["packets"] == 3 * FRAMES - 2
        assert result["cost_usd"] == story["cost_usd"] == round(sum(s["cost_usd"] for s in segs), 6)
        assert result["timings"]["total_s"] > 0 and result["timings"]["gpu_s"] > 0

        joined = await _fetch(sim, result["video_url"], tmp_path / "story.mp4")
        probe = ffprobe(joined)
        assert probe["codec_name"] == "h264" and (probe["width"], probe["height"]) == (256, 256)
        assert int(probe["nb_read_frames"]) == 3 * FRAMES - 2
        assert probe["r_frame_rate"] == "16/1"

        parts = [await _fetch(sim, s["video_url"], tmp_path / f"seg{i}.mp4") for i, s in enumerate(segs)]
        # A copy, not a re-encode: the joined stream is the segments' packets, byte for byte, in order.
        assert video_packets(joined) == [p for part in parts for p in video_packets(part)]

        frames = _frames(joined)
        lasts = [_png((await sim.client.get(s["last_frame_url"])).content) for s in segs]
        ends = [FRAMES - 1, 2 * FRAMES - 2, 3 * FRAMES - 3]  # each segment's last frame in the joined video
        for end, last in zip(ends, lasts, strict=True):
            assert _mad(frames[end], last) < 2.0  # the joint frame is that segment's last frame
        for end in ends[:2]:  # the next one moves on from it (the repeated start frame was dropped)
            assert _mad(frames[end + 1], frames[end]) > 0.5

        # Segments 2 and 3 really started from the previous last frame, and cut it in the graph.
        comfy = sim.comfy(segs[0]["result"]["instance_id"])
        _, history = await comfy_state(comfy)
        graphs = [entry["prompt"][2] for entry in sorted(history.values(), key=lambda e: e["prompt"][0])]
        assert len(graphs) == 3
        assert TRIM_NODE_ID not in graphs[0]
        for graph in graphs[1:]:
            trim = graph[TRIM_NODE_ID]
            assert trim["class_type"] == TRIM_NODE_CLASS and trim["inputs"]["batch_index"] == 1
            assert graph["108"]["inputs"]["images"] == [TRIM_NODE_ID, 0]
        for graph, previous in zip(graphs[1:], segs[:2], strict=True):
            uploaded = comfy.install.comfy_dir / "input" / graph["97"]["inputs"]["image"]
            stored = (await sim.client.get(previous["last_frame_url"])).content
            assert hashlib.sha256(uploaded.read_bytes()).digest() == hashlib.sha256(stored).digest()


async def test_changing_segment_2s_prompt_renders_segments_2_and_3_again_and_reuses_1(tmp_path):
    async with sim_api(tmp_path / "data", pool_max_instances=1) as sim:
        first = (
            await sim.client.post("/vastai/generate-story", json=story_body("a", "b", "c", wait=60))
        ).json()
        assert first["state"] == "succeeded", first["error"]
        comfy = sim.comfy(first["segments"][0]["result"]["instance_id"])
        assert len(await prompt_ids(comfy)) == 3

        changed = (
            await sim.client.post("/vastai/generate-story", json=story_body("a", "B!", "c", wait=60))
        ).json()
        assert changed["state"] == "succeeded", changed["error"]
        assert [s["cached"] for s in changed["segments"]] == [True, False, False]
        assert changed["segments"][0]["video_url"] == first["segments"][0]["video_url"]
        assert changed["segments"][2]["video_url"] != first["segments"][2]["video_url"]
        assert len(await prompt_ids(comfy)) == 5  # two more renders: segments 2 and 3
        assert changed["result"]["cached"] is False

        again = (
            await sim.client.post("/vastai/generate-story", json=story_body("a", "b", "c", wait=60))
        ).json()
        assert [s["cached"] for s in again["segments"]] == [True, True, True]
        assert again["result"]["cached"] is True and again["result"]["join"]["reused"] is True
        assert again["result"]["video_url"] == first["result"]["video_url"]
        assert len(await prompt_ids(comfy)) == 5  # nothing rendered


@pytest.mark.usefixtures("database")  # the database matters here: runs on SQLite and on PostgreSQL
async def test_cancel_mid_story_stops_the_running_segment_and_skips_the_rest(tmp_path):
    async with sim_api(tmp_path / "data", pool_max_instances=1, sim_step_delay_s=0.25) as sim:
        body = story_body("one", "two", "three", steps=8)
        r = await sim.client.post("/vastai/generate-story", json=body)
        assert r.status_code == 202, r.text
        story_id = r.json()["story_id"]

        async def sampling_segment_2() -> bool:
            s = (await sim.client.get(f"/stories/{story_id}")).json()
            seg = s["segments"][1]
            return seg["state"] == "running" and str(seg["stage"] or "").startswith("sampling")

        await eventually(sampling_segment_2, within_s=60, what="segment 2 sampling")
        r = await sim.client.delete(f"/stories/{story_id}")
        assert r.status_code == 200, r.text
        story = r.json()
        assert story["state"] == "cancelled" and story["error"]["kind"] == "cancelled"
        states = [s["state"] for s in story["segments"]]
        assert states == ["succeeded", "cancelled", "pending"]
        assert story["segments"][0]["video_url"]  # the finished segment keeps its result
        assert story["segments"][2]["job_id"] is None  # never created
        assert story["result"] is None

        comfy = sim.comfy(story["segments"][0]["result"]["instance_id"])

        async def idle() -> bool:
            queue, _ = await comfy_state(comfy)
            return queue["queue_running"] == [] and queue["queue_pending"] == []

        await eventually(idle, within_s=5, what="the segment's prompt to leave the GPU")
        assert len(await prompt_ids(comfy)) == 2  # segment 3 never reached the GPU


@pytest.mark.usefixtures("database")  # the database matters here: runs on SQLite and on PostgreSQL
async def test_a_failed_segment_fails_the_story_with_its_reason_and_keeps_finished_segments(tmp_path):
    async with sim_api(tmp_path / "data", pool_max_instances=1) as sim:
        warm = (
            await sim.client.post("/vastai/generate-story", json=story_body("warm", seed=1, wait=60))
        ).json()
        comfy = sim.comfy(warm["segments"][0]["result"]["instance_id"])
        comfy.faults.error_at_node = TRIM_NODE_ID  # only segments 2..n have it
        comfy.faults.error_message = "CUDA out of memory (simulated)"
        story = (
            await sim.client.post("/vastai/generate-story", json=story_body("x", "y", "z", seed=50, wait=60))
        ).json()
        assert story["state"] == "failed"
        assert story["error"]["message"].startswith("segment 2 of 3 failed:")
        assert "out of memory" in story["error"]["message"]
        assert [s["state"] for s in story["segments"]] == ["succeeded", "failed", "pending"]
        assert story["segments"][0]["video_url"] and story["segments"][0]["last_frame_url"]
        assert story["segments"][1]["error"]["message"]


async def test_story_progress_events_span_every_segment(tmp_path):
    async with sim_api(tmp_path / "data", sim_step_delay_s=0.02) as sim:
        story_id = (await sim.client.post("/vastai/generate-story", json=story_body("p", "q"))).json()[
            "story_id"
        ]
        seen: list[dict] = []
        async with sim.client.stream("GET", f"/stories/{story_id}/events") as resp:
            assert resp.status_code == 200
            event = None
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    import json

                    seen.append({"event": event, **json.loads(line[6:])})
                    if event == "end":
                        break
        assert seen[0]["event"] == "snapshot" and seen[-1]["event"] == "end"
        assert seen[-1]["state"] == "succeeded"
        progress = [e for e in seen if e["event"] == "progress" and "segment" in e]
        assert {e["segment"] for e in progress} == {1, 2} and all(e["segments"] == 2 for e in progress)
        assert any(str(e["segment_stage"]).startswith("sampling") for e in progress)
        values = [e["progress"] for e in progress]
        assert values == sorted(values) and values[-1] < 1.0
