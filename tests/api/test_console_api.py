"""The routes the web console needs: GET /workflows (the form's source), rerun, the cleanup log."""

from __future__ import annotations

import base64

import jsonschema
import pytest

from app.config import Settings
from app.workflows.describe import describe
from app.workflows.loader import load_workflows
from tests.api.conftest import api
from tests.jobs.fakes import png_bytes

B64 = base64.b64encode(png_bytes(96, 64)).decode()


async def test_workflows_describe_inputs_params_limits_and_defaults(tmp_path):
    async with api(tmp_path) as c:
        r = await c.get("/workflows")
        assert r.status_code == 200, r.text
        body = r.json()
        names = [w["name"] for w in body["workflows"]]
        assert body["default"] in names
        wf = next(w for w in body["workflows"] if w["name"] == "wan22_i2v_lightx2v_gguf")
        assert wf["inputs"] == [
            {"name": "image", "kind": "image", "required": True, "fields": ["image_url", "image_base64"]}
        ]
        params = {p["name"]: p for p in wf["params"]}
        nf = params["num_frames"]
        assert (nf["type"], nf["default"], nf["min"], nf["max"]) == ("int", 81, 5, 161)
        assert params["num_frames"]["multiple_of"] == 4 and params["num_frames"]["remainder"] == 1
        assert params["width"]["multiple_of"] == 16 and params["width"]["required"] is False
        assert params["prompt"]["required"] is True and params["prompt"]["max_length"] == 2000
        one = await c.get("/workflows/wan22_i2v_lightx2v_gguf")
        assert one.status_code == 200 and one.json() == wf
        missing = await c.get("/workflows/nope")
        assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "name"
        assert (await c.get("/workflows", headers={"Authorization": "Bearer wrong"})).status_code == 401


def test_describe_takes_inputs_camera_moves_presets_and_a_json_schema_from_the_manifests():
    """The Wan family's manifests are described with no per-workflow code: FLF2V's two images, S2V's
    audio (with its limit), T2V's no file at all, Fun Camera's poses, presets, and a JSON Schema."""
    wfs = load_workflows(Settings())
    flf = describe(wfs["wan22_flf2v_lightx2v_gguf"])
    assert [(i["name"], i["kind"], i["required"]) for i in flf["inputs"]] == [
        ("image", "image", True),
        ("end_image", "image", True),
    ]
    assert flf["inputs"][1]["fields"] == ["end_image_url", "end_image_base64"]
    s2v = describe(wfs["wan22_s2v"])
    assert ("audio", "audio", True) in [(i["name"], i["kind"], i["required"]) for i in s2v["inputs"]]
    assert s2v["max_audio_seconds"] == 60
    assert describe(wfs["wan22_t2v_lightx2v_gguf"])["inputs"] == []
    cam = {c["name"]: c for c in describe(wfs["wan22_fun_camera"])["camera_motions"]}
    assert cam["zoom_in"]["how"] == "pose" and "orbit_left" not in cam
    i2v = describe(wfs["wan22_i2v_lightx2v_gguf"])
    assert {c["name"]: c["how"] for c in i2v["camera_motions"]}["pan_left"] == "prompt"
    presets = {p["name"]: p for p in i2v["quality_presets"]}
    assert set(presets) == {"draft", "standard", "high", "ultra"}
    assert presets["high"]["workflow"] == "wan22_i2v_hq_gguf"
    schema = i2v["params_schema"]
    assert schema["properties"]["steps"]["type"] == "integer"
    assert schema["properties"]["width"]["multipleOf"] == 16
    assert schema["properties"]["output_format"]["enum"] == ["mp4", "webm"]
    assert "prompt" in schema["required"] and "width" not in schema["required"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"prompt": "waves", "steps": 4, "output_format": "webm"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"prompt": "waves", "output_format": "gif"}, schema)


@pytest.mark.usefixtures("database")
async def test_rerun_with_the_same_or_a_new_seed(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post("/vastai/generate-video", json={"image_base64": B64, "prompt": "waves", "seed": 5})
        first = await c.world.wait(r.json()["job_id"])
        assert first.state == "succeeded"
        same = await c.post(f"/jobs/{first.id}/rerun")
        assert same.status_code == 202, same.text
        again = await c.world.wait(same.json()["job_id"])
        assert again.id != first.id and again.request["params"]["seed"] == 5
        assert (
            again.request["params"]["prompt"] == "waves"
            and again.request["image_sha256"] == (first.request["image_sha256"])
        )
        new = await c.post(f"/jobs/{first.id}/rerun", params={"new_seed": "true"})
        assert new.status_code == 202, new.text
        other = await c.world.wait(new.json()["job_id"])
        assert other.request["seed_requested"] == -1 and other.request["params"]["prompt"] == "waves"
        assert (await c.post("/jobs/job_nope/rerun")).status_code == 404


@pytest.mark.usefixtures("database")
async def test_cleanup_log_lists_what_the_reaper_did(tmp_path):
    async with api(tmp_path) as c:
        assert (await c.get("/cleanup")).json() == {"actions": []}
        repo = c.world.services.repo  # the reaper's own write path
        await repo.record_cleanup(kind="idle_instance", target="27400001", reason="idle for 600 s")
        await repo.record_cleanup(
            kind="orphan_instance", target="27400002", reason="not in the ledger", dry_run=True
        )
        r = await c.get("/cleanup", params={"limit": 10})
        assert r.status_code == 200
        actions = r.json()["actions"]
        assert [(a["kind"], a["target"], a["dry_run"]) for a in actions] == [
            ("orphan_instance", "27400002", True),
            ("idle_instance", "27400001", False),
        ]
        assert actions[1]["reason"] == "idle for 600 s" and actions[1]["ok"] is True
