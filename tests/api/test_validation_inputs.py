"""File inputs declared by the manifest (issue 11): end image and audio, as base64, URL or multipart
parts. Bad forms get a 4xx naming the field and create no job (and leave no file); good ones reach the
job record and the cache key."""

from __future__ import annotations

import base64
import io
import math
import struct
import wave

import pytest
from aiohttp import web

from app.config import Settings
from app.workflows import get_workflow
from tests.api.conftest import api, http_server
from tests.jobs.fakes import png_bytes

pytestmark = pytest.mark.usefixtures("database")

IMG = base64.b64encode(png_bytes(96, 64)).decode()


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(n)))
    return buf.getvalue()


AUDIO = base64.b64encode(wav_bytes(2.0)).decode()


def real_workflows(name: str):
    return get_workflow(name, Settings())


def client(tmp_path, **kw):
    kw.setdefault("default_workflow", "wan22_i2v_lightx2v_gguf")
    return api(tmp_path, workflows=real_workflows, allow_loopback=True, **kw)


async def _rejected(c, field, status=422, **kw):
    r = await c.post("/vastai/generate-video", **kw)
    assert r.status_code == status, r.text
    data = r.json()
    assert field in [e["field"] for e in data["errors"]], data
    assert await c.world.services.repo.list() == []
    inputs = c.world.settings.data_dir / "inputs"
    assert [p for p in inputs.rglob("*") if p.is_file()] == []
    return data


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"workflow": "wan22_s2v", "image_base64": IMG}, "audio_url", "needs audio"),
        ({"workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": "%%%"}, "audio_base64", "base64"),
        (
            {
                "workflow": "wan22_s2v",
                "image_base64": IMG,
                "audio_base64": base64.b64encode(b"RIFFnope").decode(),
            },
            "audio_base64",
            "not decodable audio",
        ),
        (
            {"workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": IMG},  # a PNG is not audio
            "audio_base64",
            "",
        ),
        ({"workflow": "wan22_flf2v_lightx2v_gguf", "image_base64": IMG}, "end_image_url", "needs end image"),
        (
            {"workflow": "wan22_flf2v_lightx2v_gguf", "image_base64": IMG, "end_image_base64": AUDIO},
            "end_image_base64",
            "decodable image",
        ),
        ({"image_base64": IMG, "audio_base64": AUDIO}, "audio_base64", "takes no audio"),
        ({"image_base64": IMG, "end_image_base64": IMG}, "end_image_base64", "takes no end image"),
        ({"workflow": "wan22_t2v_lightx2v_gguf", "image_base64": IMG}, "image_base64", "takes no image"),
        ({}, "image_url", "needs image"),
        (
            {
                "workflow": "wan22_flf2v_lightx2v_gguf",
                "image_base64": IMG,
                "end_image_base64": IMG,
                "end_image_url": "https://example.com/a.png",
            },
            "end_image_url",
            "exactly one of end_image_url or end_image_base64",
        ),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(tmp_path, body, field, words):
    async with client(tmp_path) as c:
        data = await _rejected(c, field, json={"prompt": "x", **body})
        assert words in data["detail"]


async def test_too_long_audio_names_the_field(tmp_path):
    async with client(tmp_path, max_audio_seconds=1.5) as c:
        data = await _rejected(
            c,
            "audio_base64",
            json={"prompt": "x", "workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": AUDIO},
        )
        assert "1.5 s" in data["detail"]


async def test_audio_longer_than_the_workflow_limit_names_the_field(tmp_path):
    long_audio = base64.b64encode(wav_bytes(61.0, rate=800)).decode()
    async with client(tmp_path) as c:  # the server allows 60 s here; wan22_s2v allows 60 s
        data = await _rejected(
            c,
            "audio_base64",
            json={"prompt": "x", "workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": long_audio},
        )
        assert "60 s" in data["detail"]


async def test_oversize_audio_is_413(tmp_path):
    async with client(tmp_path, max_audio_bytes=1000) as c:
        await _rejected(
            c,
            "audio_base64",
            status=413,
            json={"prompt": "x", "workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": AUDIO},
        )


async def test_audio_url_to_a_private_address_is_refused(tmp_path):
    async with api(tmp_path, workflows=real_workflows) as c:  # no loopback allowance
        await _rejected(
            c,
            "audio_url",
            json={
                "prompt": "x",
                "workflow": "wan22_s2v",
                "image_base64": IMG,
                "audio_url": "http://127.0.0.1:9/a.wav",
            },
        )


async def test_s2v_job_keeps_its_audio_and_its_length(tmp_path):
    async with client(tmp_path) as c:
        body = {"prompt": "x", "workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": AUDIO, "seed": 5}
        r = await c.post("/vastai/generate-video", json=body)
        assert r.status_code == 202, r.text
        job = (await c.world.services.repo.list())[0]
        files = job.request["files"]
        assert set(files) == {"audio"} and files["audio"]["path"].endswith(".wav")
        assert job.request["audio_seconds"] == pytest.approx(2.0)
        assert job.request["inputs"] == ["image", "audio"]
        # another audio is another result
        other = base64.b64encode(wav_bytes(2.5)).decode()
        r2 = await c.post("/vastai/generate-video", json={**body, "audio_base64": other})
        assert r2.status_code == 202, r2.text
        keys = {j.cache_key for j in await c.world.services.repo.list()}
        assert len(keys) == 2


async def test_audio_url_is_fetched(tmp_path):
    raw = wav_bytes(1.0)

    async def serve(_request):
        return web.Response(body=raw, content_type="audio/wav")

    async with http_server({"/a.wav": serve}) as base, client(tmp_path) as c:
        r = await c.post(
            "/vastai/generate-video",
            json={"prompt": "x", "workflow": "wan22_s2v", "image_base64": IMG, "audio_url": f"{base}/a.wav"},
        )
        assert r.status_code == 202, r.text
        job = (await c.world.services.repo.list())[0]
        assert job.request["audio_seconds"] == pytest.approx(1.0)


async def test_text_only_job_has_no_image(tmp_path):
    async with client(tmp_path) as c:
        r = await c.post(
            "/vastai/generate-video",
            json={"prompt": "a fox", "workflow": "wan22_t2v_lightx2v_gguf", "num_frames": 17},
        )
        assert r.status_code == 202, r.text
        job = (await c.world.services.repo.list())[0]
        assert "image_path" not in job.request and job.request["inputs"] == []
        assert (job.request["params"]["width"], job.request["params"]["height"]) == (832, 480)


async def test_multipart_form_fields_and_files(tmp_path):
    async with client(tmp_path) as c:
        r = await c.post(
            "/vastai/generate-video",
            data={"prompt": "a guitar", "workflow": "wan22_s2v", "seed": "7", "steps": "4"},
            files={
                "image": ("ref.png", png_bytes(96, 64), "image/png"),
                "audio": ("a.wav", wav_bytes(1.0), "audio/wav"),
            },
        )
        assert r.status_code == 202, r.text
        job = (await c.world.services.repo.list())[0]
        assert job.request["params"]["seed"] == 7 and job.request["inputs"] == ["image", "audio"]


async def test_multipart_request_part_and_end_image(tmp_path):
    import json

    async with client(tmp_path) as c:
        r = await c.post(
            "/vastai/generate-video",
            data={
                "request": json.dumps(
                    {"prompt": "x", "workflow": "wan22_flf2v_lightx2v_gguf", "num_frames": 17}
                )
            },
            files={
                "image": ("a.png", png_bytes(96, 64), "image/png"),
                "end_image": ("b.png", png_bytes(64, 64), "image/png"),
            },
        )
        assert r.status_code == 202, r.text
        job = (await c.world.services.repo.list())[0]
        assert set(job.request["files"]) == {"end_image"}


async def test_multipart_bad_audio_part_names_it(tmp_path):
    async with client(tmp_path) as c:
        await _rejected(
            c,
            "audio",
            data={"prompt": "x", "workflow": "wan22_s2v"},
            files={
                "image": ("a.png", png_bytes(96, 64), "image/png"),
                "audio": ("a.wav", b"not audio", "audio/wav"),
            },
        )


async def test_multipart_file_the_workflow_does_not_take(tmp_path):
    async with client(tmp_path) as c:
        await _rejected(
            c,
            "audio",
            data={"prompt": "x"},
            files={
                "image": ("a.png", png_bytes(96, 64), "image/png"),
                "audio": ("a.wav", wav_bytes(1.0), "audio/wav"),
            },
        )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"workflow": "wan22_fun_camera", "image_base64": IMG, "camera_motion": "orbit_left"},
            "camera_motion",
        ),
        ({"image_base64": IMG, "camera_motion": "barrel_roll"}, "camera_motion"),
        ({"image_base64": IMG, "quality_preset": "max"}, "quality_preset"),
        ({"image_base64": IMG, "output_format": "avi"}, "output_format"),
        ({"image_base64": IMG, "crf": 60}, "crf"),
    ],
)
async def test_bad_feature_field_is_a_422_naming_it(tmp_path, body, field):
    async with client(tmp_path) as c:
        await _rejected(c, field, json={"prompt": "x", **body})


async def test_preset_and_camera_reach_the_job(tmp_path):
    async with client(tmp_path) as c:
        r = await c.post(
            "/vastai/generate-video",
            json={
                "prompt": "a fox",
                "image_base64": IMG,
                "quality_preset": "high",
                "camera_motion": "pan_left",
            },
        )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["workflow"] == "wan22_i2v_hq_gguf"
        stored = (await c.world.services.repo.list())[0]
        assert stored.request["params"]["prompt"] == "a fox. The camera pans left."
        assert stored.request["applied"]["quality_preset"]["workflow"] == "wan22_i2v_hq_gguf"


async def test_enhanced_prompt_is_what_runs_and_what_is_keyed(tmp_path):
    async with client(tmp_path) as c:
        body = {"prompt": "a fox. in the snow", "image_base64": IMG, "seed": 3}
        plain = await c.post("/vastai/generate-video", json=body)
        enhanced = await c.post("/vastai/generate-video", json={**body, "enhance_prompt": True})
        assert plain.status_code == enhanced.status_code == 202, enhanced.text
        jobs = {j.id: j for j in await c.world.services.repo.list()}
        e = jobs[enhanced.json()["job_id"]]
        assert e.request["params"]["prompt"].startswith("A fox. In the snow.")
        assert e.request["applied"]["enhance_prompt"]["by"] == "local"
        assert e.cache_key != jobs[plain.json()["job_id"]].cache_key


async def test_batch_requests_take_their_own_inputs(tmp_path):
    async with client(tmp_path) as c:
        good = {
            "requests": [
                {"prompt": "a fox", "workflow": "wan22_t2v_lightx2v_gguf", "num_frames": 17},
                {"prompt": "sing", "workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": AUDIO},
            ]
        }
        r = await c.post("/vastai/generate-video/batch", json=good)
        assert r.status_code == 202, r.text
        jobs = await c.world.services.repo.list()
        assert sorted(j.workflow for j in jobs) == ["wan22_s2v", "wan22_t2v_lightx2v_gguf"]


@pytest.mark.parametrize(
    ("second", "field"),
    [
        ({"prompt": "sing", "workflow": "wan22_s2v", "image_base64": IMG}, "requests[1].audio_url"),
        (
            {"prompt": "sing", "workflow": "wan22_s2v", "image_base64": IMG, "audio_base64": IMG},
            "requests[1].audio_base64",
        ),
        (
            {"prompt": "x", "workflow": "wan22_t2v_lightx2v_gguf", "image_base64": IMG},
            "requests[1].image_base64",
        ),
    ],
)
async def test_batch_bad_input_names_the_request_and_creates_nothing(tmp_path, second, field):
    async with client(tmp_path) as c:
        body = {"requests": [{"prompt": "a", "image_base64": IMG}, second]}
        r = await c.post("/vastai/generate-video/batch", json=body)
        assert r.status_code == 422, r.text
        assert field in [e["field"] for e in r.json()["errors"]], r.json()
        assert await c.world.services.repo.list() == []
        inputs = c.world.settings.data_dir / "inputs"
        assert [p for p in inputs.rglob("*") if p.is_file()] == []
