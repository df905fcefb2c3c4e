"""The Wan graph end to end: sampler progress per step, a real H.264 MP4 (size, frames, fps, pixel
format, moving, marked simulated) under VideoHelperSuite's names, and the optional padding."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import av
import numpy as np

from tests.sim_comfyui.helpers import read_until_done, wan_prompt

CLIENT = "wan-client"


async def _run_wan(emu, http, **kwargs):
    graph = await wan_prompt(emu, http, **kwargs)
    ws = await http.ws_connect(f"{emu.url}/ws?clientId={CLIENT}")
    await ws.receive_json()
    async with http.post(f"{emu.url}/prompt", json={"prompt": graph, "client_id": CLIENT}) as resp:
        assert resp.status == 200
        pid = (await resp.json())["prompt_id"]
    messages = await read_until_done(ws, pid)
    await ws.close()
    async with http.get(f"{emu.url}/history/{pid}") as resp:
        history = (await resp.json())[pid]
    return messages, history


def _probe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,pix_fmt,width,height,nb_read_frames,r_frame_rate:format_tags=comment",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


async def test_wan_job_reports_sampler_steps_and_frames(make_emu, http):
    emu = await make_emu(step_delay_s=0.01)
    messages, history = await _run_wan(emu, http, steps=4, length=9)
    progress = [
        (m["data"]["node"], m["data"]["value"], m["data"]["max"])
        for m in messages
        if m.get("type") == "progress"
    ]
    assert progress == [("86", 1, 2), ("86", 2, 2), ("85", 1, 2), ("85", 2, 2)] + [
        ("108", i, 9) for i in range(1, 10)
    ]
    types = [m["type"] for m in messages]
    assert types[:4] == ["status", "status", "execution_start", "execution_cached"]
    assert types[-3:] == ["execution_success", "status", "executing"]
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert executing.index("86") < executing.index("85") < executing.index("87") < executing.index("108")
    assert history["status"]["status_str"] == "success"
    assert history["prompt"][2]["108"]["inputs"]["frame_rate"] == 16.0


async def test_wan_mp4_is_h264_yuv420p_with_requested_geometry(emu, http, comfy_dir):
    _, history = await _run_wan(emu, http, width=64, height=48, length=13, fps=8)
    gif = history["outputs"]["108"]["gifs"][0]
    assert gif["filename"] == "Wan2.2_i2v_00001.mp4" and gif["subfolder"] == "video"
    assert gif["format"] == "video/h264-mp4" and gif["frame_rate"] == 8.0 and gif["type"] == "output"
    path = Path(gif["fullpath"])
    assert path == comfy_dir / "output" / "video" / "Wan2.2_i2v_00001.mp4"
    assert (path.parent / gif["workflow"]).is_file()
    probe = _probe(path)
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["pix_fmt"], stream["width"], stream["height"]) == (
        "h264",
        "yuv420p",
        64,
        48,
    )
    assert stream["nb_read_frames"] == "13" and stream["r_frame_rate"] == "8/1"
    assert probe["format"]["tags"]["comment"] == "comfyfleet simulated"
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    assert np.abs(frames[0] - frames[-1]).mean() > 5  # it visibly moves


async def test_vhs_counter_increments_without_trailing_underscore(emu, http, comfy_dir):
    await _run_wan(emu, http, length=5)
    _, history = await _run_wan(emu, http, length=5, steps=2)  # different graph: not served from cache
    assert history["outputs"]["108"]["gifs"][0]["filename"] == "Wan2.2_i2v_00002.mp4"
    assert sorted(p.name for p in (comfy_dir / "output" / "video").iterdir()) == [
        "Wan2.2_i2v_00001.mp4",
        "Wan2.2_i2v_00001.png",
        "Wan2.2_i2v_00002.mp4",
        "Wan2.2_i2v_00002.png",
    ]


async def test_length_not_4n_plus_1_decodes_like_the_wan_vae(emu, http):
    _, history = await _run_wan(emu, http, length=8)
    probe = _probe(Path(history["outputs"]["108"]["gifs"][0]["fullpath"]))
    assert probe["streams"][0]["nb_read_frames"] == "5"


async def test_video_pad_bytes_appends_free_box(make_emu, http):
    emu = await make_emu(video_pad_bytes=300_000)
    _, history = await _run_wan(emu, http, length=5)
    path = Path(history["outputs"]["108"]["gifs"][0]["fullpath"])
    assert (await asyncio.to_thread(path.stat)).st_size == 300_000
    probe = _probe(path)
    assert probe["streams"][0]["nb_read_frames"] == "5"
