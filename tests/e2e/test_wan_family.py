"""Every new Wan 2.2 workflow end to end in the simulated world (issue 11): HTTP request in, a real
video out whose frames, fps and size (and, for S2V, audio stream and duration) PyAV reads back.

One world for all of them (small sizes, few frames, 2 steps) so the file stays fast."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import struct
import wave

import av
import pytest

from tests.e2e.conftest import b64, png_bytes, sim_api

pytestmark = pytest.mark.usefixtures("database")


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(struct.pack("<h", int(6000 * math.sin(i / 8))) for i in range(int(seconds * rate)))
        )
    return buf.getvalue()


def probe(data: bytes) -> dict:
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        frames = [f.to_image() for f in c.decode(v)]
        out = {
            "frames": len(frames),
            "fps": float(v.average_rate),
            "size": (v.codec_context.width, v.codec_context.height),
            "codec": v.codec_context.name,
            "last": frames[-1],
            "audio": None,
        }
    with av.open(io.BytesIO(data)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            samples = sum(f.samples for f in c.decode(a))
            out["audio"] = samples / a.codec_context.sample_rate
    return out


START = b64(png_bytes(128, 128, color=(200, 30, 30)))
END = b64(png_bytes(128, 128, color=(20, 40, 220)))
SMALL = {"width": 256, "height": 256, "steps": 2, "seed": 7, "prompt": "a fox walks through snow"}

CASES = {
    "wan22_i2v_hq_gguf": ({**SMALL, "image_base64": START, "num_frames": 9}, 9, 16.0),
    "wan22_flf2v_lightx2v_gguf": (
        {**SMALL, "image_base64": START, "end_image_base64": END, "num_frames": 9},
        9,
        16.0,
    ),
    "wan22_t2v_lightx2v_gguf": ({**SMALL, "num_frames": 9}, 9, 16.0),
    "wan22_ti2v_5b": ({**SMALL, "num_frames": 13}, 13, 24.0),
    "wan22_fun_camera": ({**SMALL, "image_base64": START, "num_frames": 9}, 9, 16.0),
    # 1.5 s of audio: one 77-frame chunk, trimmed to the audio (ceil(1.5 * 16) = 24 frames)
    "wan22_s2v": (
        {**SMALL, "image_base64": START, "audio_base64": base64.b64encode(wav_bytes(1.5)).decode()},
        24,
        16.0,
    ),
}


async def test_every_new_workflow_renders_a_real_video(tmp_path):
    async with sim_api(tmp_path / "data", pool_max_instances=2) as sim:

        async def run(name: str) -> tuple[str, dict]:
            body, _frames, _fps = CASES[name]
            r = await sim.client.post("/vastai/generate-video", json={**body, "workflow": name, "wait": 120})
            assert r.status_code == 200, r.text
            return name, r.json()

        results = dict(await asyncio.gather(*(run(name) for name in CASES)))
        for name, job in results.items():
            assert job["state"] == "succeeded", (name, job["error"])
            _body, frames, fps = CASES[name]
            video = await sim.client.get(job["result"]["video_url"])
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            info = probe(video.content)
            assert (info["frames"], info["fps"], info["size"]) == (frames, fps, (256, 256)), name
            assert info["codec"] == "h264"
            if name == "wan22_s2v":
                assert info["audio"] == pytest.approx(1.5, abs=0.07)
            else:
                assert info["audio"] is None, name
            if name == "wan22_flf2v_lightx2v_gguf":  # ends on the last image (blue), not the start (red)
                r, _g, b = info["last"].convert("RGB").resize((1, 1)).getpixel((0, 0))
                assert b > 150 and r < 80, info["last"].resize((1, 1)).getpixel((0, 0))

        # webm (VP9) output, stored with its content type
        r = await sim.client.post(
            "/vastai/generate-video",
            json={
                **SMALL,
                "num_frames": 9,
                "workflow": "wan22_t2v_lightx2v_gguf",
                "output_format": "webm",
                "wait": 120,
            },
        )
        job = r.json()
        assert job["state"] == "succeeded", job["error"]
        assert job["result"]["video_url"].split("?")[0].endswith(".webm")
        video = await sim.client.get(job["result"]["video_url"])
        assert video.headers["content-type"] == "video/webm"
        info = probe(video.content)
        assert (info["codec"], info["frames"], info["size"]) == ("vp9", 9, (256, 256))
