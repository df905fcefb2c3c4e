"""The Wan 2.2 family (issue 11): every shipped workflow's rendered graph passes the real server's
validation (captured node schemas, audio nodes included), file inputs follow the manifest, and S2V's
Extend block repeats as often as the audio needs."""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import wave
from pathlib import Path

import pytest

from app.comfy.graph_check import validate_prompt
from app.config import Settings
from app.errors import ValidationError
from app.provision.warmup import warm_up
from app.workflows import get_workflow
from app.workflows.plan import plan_request

FAMILY = [
    "wan22_i2v_lightx2v_gguf",
    "wan22_i2v_hq_gguf",
    "wan22_flf2v_lightx2v_gguf",
    "wan22_t2v_lightx2v_gguf",
    "wan22_ti2v_5b",
    "wan22_s2v",
    "wan22_fun_camera",
]
UPLOADS = {"image": "start.png", "end_image": "end.png", "audio": "voice.mp3"}


@pytest.fixture(scope="module")
def object_info(fixtures_dir: Path) -> dict:
    info = json.loads((fixtures_dir / "comfyui" / "object_info_full_with_audio.json").read_text())
    info["LoadImage"]["input"]["required"]["image"][0].extend([UPLOADS["image"], UPLOADS["end_image"]])
    info["LoadAudio"]["input"]["required"]["audio"][0].append(UPLOADS["audio"])
    return info


def lookup(name: str):
    return get_workflow(name, Settings())


def render(name: str, *, given=None, audio_seconds=None, raw=None):
    wf = lookup(name)
    given = given if given is not None else {n: n for n in wf.inputs.taken if wf.inputs.spec(n).required}
    plan = plan_request(
        lookup,
        name,
        raw or {"prompt": "a red fox runs"},
        given=given,
        image_size=(640, 480),
        audio_seconds=audio_seconds,
    )
    names = {f"{n}_name": UPLOADS[n] for n in given if n != "image"}
    graph = plan.workflow.render(
        plan.params.with_resolved_seed(),
        UPLOADS["image"] if "image" in given else None,
        "comfyfleet/t",
        audio_seconds=audio_seconds,
        **names,
    )
    return plan, graph


@pytest.mark.parametrize("name", FAMILY)
def test_rendered_graph_is_accepted_by_the_real_schemas(name, object_info):
    wf = lookup(name)
    _plan, graph = render(name, audio_seconds=7.0 if wf.inputs.audio.taken else None)
    check = validate_prompt(graph, object_info)
    assert check.ok and check.node_errors == {}, (check.error, check.node_errors)
    assert wf.video_node in check.outputs


def test_the_manifests_declare_the_inputs_of_the_issue():
    described = {name: lookup(name).inputs.describe() for name in FAMILY}
    assert described == {
        "wan22_i2v_lightx2v_gguf": "image",
        "wan22_i2v_hq_gguf": "image",
        "wan22_flf2v_lightx2v_gguf": "image, end_image",
        "wan22_t2v_lightx2v_gguf": "text only",
        "wan22_ti2v_5b": "image?",
        "wan22_s2v": "image, audio",
        "wan22_fun_camera": "image",
    }


def test_template_values_the_issue_names():
    hq = lookup("wan22_i2v_hq_gguf")
    assert (hq.limits["steps"].default, hq.limits["cfg_scale"].default) == (20, 3.5)
    _plan, graph = render("wan22_i2v_hq_gguf")
    assert graph["57"]["inputs"]["end_at_step"] == 10 and graph["54"]["inputs"]["shift"] == 8.0
    assert not any(n["class_type"] == "LoraLoaderModelOnly" for n in graph.values())
    ti2v = lookup("wan22_ti2v_5b")
    assert (ti2v.limits["width"].default, ti2v.limits["height"].default, ti2v.limits["fps"].default) == (
        1280,
        704,
        24,
    )


def test_ti2v_without_an_image_drops_the_image_branch(object_info):
    _plan, graph = render("wan22_ti2v_5b", given={})
    assert "56" not in graph and "start_image" not in graph["55"]["inputs"]
    assert (graph["55"]["inputs"]["width"], graph["55"]["inputs"]["height"]) == (1280, 704)
    assert validate_prompt(graph, object_info).ok
    _plan, with_image = render("wan22_ti2v_5b", given={"image": "image_url"})
    assert with_image["55"]["inputs"]["start_image"] == ["56", 0]
    assert with_image["56"]["inputs"]["image"] == UPLOADS["image"]


def test_flf2v_binds_both_images():
    _plan, graph = render("wan22_flf2v_lightx2v_gguf")
    assert graph["68"]["inputs"]["image"] == UPLOADS["image"]
    assert graph["62"]["inputs"]["image"] == UPLOADS["end_image"]


@pytest.mark.parametrize("seconds", [1.0, 3.0, 5.0, 10.0, 14.0, 15.0, 30.0, 60.0])
def test_s2v_chunks_follow_the_audio(seconds, object_info):
    """N = ceil((16 d + 3) / 80) chunks (the notes' table): the base chunk plus N - 1 Extend blocks,
    each chained to the previous one; the video keeps 80 N - 2 frames >= the audio's 16 d."""
    _plan, graph = render("wan22_s2v", audio_seconds=seconds)
    chunks = math.ceil((16 * seconds + 3) / 80)
    extends = [k for k, n in graph.items() if n["class_type"] == "WanSoundImageToVideoExtend"]
    assert len(extends) == chunks - 1
    assert 80 * chunks - 2 >= 16 * seconds
    check = validate_prompt(graph, object_info)
    assert check.ok and check.node_errors == {}, check.node_errors
    # the chain: each Extend reads the previous block's LatentConcat; the cut/concat read the last one
    concats = [k for k, n in graph.items() if n["class_type"] == "LatentConcat" and k not in ("95",)]
    last = graph["94"]["inputs"]["samples"][0]
    assert last == (concats[-1] if concats else "3")
    assert graph["113"]["inputs"]["audio"] == ["58", 0] and graph["113"]["inputs"]["trim_to_audio"] is True


def test_s2v_table_of_the_notes():
    expected = {3: 1, 5: 2, 10: 3, 14: 3, 15: 4, 30: 7, 60: 13}
    for seconds, chunks in expected.items():
        _plan, graph = render("wan22_s2v", audio_seconds=float(seconds))
        base_and_extends = 1 + sum(n["class_type"] == "WanSoundImageToVideoExtend" for n in graph.values())
        assert base_and_extends == chunks, seconds


def test_long_s2v_chain_validates_fast(object_info):
    """Rendering and validating the longest chain stays linear (a quadratic signature once took 63 s)."""
    t0 = time.perf_counter()
    _plan, graph = render("wan22_s2v", audio_seconds=60.0)
    assert validate_prompt(graph, object_info).ok
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize(
    ("name", "given", "field", "words"),
    [
        ("wan22_s2v", {"image": "image_url"}, "audio_url", "needs audio"),
        ("wan22_flf2v_lightx2v_gguf", {"image": "image_url"}, "end_image_url", "needs end image"),
        ("wan22_i2v_lightx2v_gguf", {}, "image_url", "needs image"),
        ("wan22_t2v_lightx2v_gguf", {"image": "image_base64"}, "image_base64", "takes no image"),
        (
            "wan22_i2v_lightx2v_gguf",
            {"image": "image_url", "audio": "audio_url"},
            "audio_url",
            "takes no audio",
        ),
        (
            "wan22_i2v_hq_gguf",
            {"image": "image_url", "end_image": "end_image_base64"},
            "end_image_base64",
            "takes no end image",
        ),
    ],
)
def test_missing_or_unwanted_input_names_the_field(name, given, field, words):
    with pytest.raises(ValidationError) as exc:
        plan_request(lookup, name, {"prompt": "x"}, given=given, image_size=(64, 48), audio_seconds=2.0)
    assert exc.value.field == field and words in exc.value.reason


def test_audio_longer_than_the_workflow_allows_names_the_field():
    with pytest.raises(ValidationError) as exc:
        plan_request(
            lookup,
            "wan22_s2v",
            {"prompt": "x"},
            given={"image": "image_url", "audio": "audio_base64"},
            image_size=(64, 48),
            audio_seconds=61.0,
        )
    assert exc.value.field == "audio_base64" and "at most 60 s" in exc.value.reason


def test_group_prefix_names_the_request():
    with pytest.raises(ValidationError) as exc:
        plan_request(
            lookup, "wan22_s2v", {"prompt": "x"}, given={"image": "image_url"}, prefix="requests[2]."
        )
    assert exc.value.field == "requests[2].audio_url"


def test_summary_describes_inputs_and_repeat():
    summary = lookup("wan22_s2v").summary()
    assert summary["inputs"]["audio"]["mode"] == "required"
    assert summary["inputs"]["max_audio_seconds"] == 60
    assert summary["repeat"]["count"] == "extend_chunks"
    json.dumps(summary)


def test_render_without_a_required_file_is_refused():
    wf = lookup("wan22_s2v")
    params = wf.validate({"prompt": "x"}, (64, 48)).with_resolved_seed()
    with pytest.raises(ValueError):
        wf.render(params, "a.png", "p")  # no audio


@pytest.mark.parametrize("name", FAMILY)
def test_webm_output_is_accepted_by_the_real_schemas(name, object_info):
    wf = lookup(name)
    _plan, graph = render(
        name,
        audio_seconds=2.0 if wf.inputs.audio.taken else None,
        raw={"prompt": "x", "output_format": "webm", "crf": 30},
    )
    assert validate_prompt(graph, object_info).ok


def test_plan_reports_the_repeat_count():
    plan, _graph = render("wan22_s2v", audio_seconds=14.0)
    assert plan.applied["repeat"] == {"block": ["79:76", "79:77", "79:78"], "count": 2}


class RecordingComfy:
    """Stands in for ComfyClient in the warm-up: keeps what was uploaded and the graph it was given."""

    def __init__(self) -> None:
        self.uploads: dict[str, bytes] = {}
        self.graph: dict | None = None

    async def upload_image(self, path: Path) -> str:
        self.uploads[path.name] = await asyncio.to_thread(path.read_bytes)
        return path.name

    async def run(self, graph, *, deadline, progress_nodes):
        self.graph = graph


@pytest.mark.parametrize("name", FAMILY)
async def test_warm_up_gives_every_workflow_its_required_inputs_and_a_valid_graph(name, object_info):
    """Issue 9's warm-up on every workflow of issue 11: stand-ins for each required file (a second of
    silence for S2V, two images for FLF2V, none for T2V), and a graph the real schemas accept."""

    wf = lookup(name)
    comfy = RecordingComfy()
    await warm_up(comfy, wf, deadline=time.monotonic() + 30)
    kinds = sorted(n.split("-")[1] for n in comfy.uploads)
    assert kinds == sorted(n for n in wf.inputs.taken if wf.inputs.spec(n).required)
    for upload, data in comfy.uploads.items():
        if upload.endswith(".wav"):
            with wave.open(io.BytesIO(data), "rb") as w:
                assert w.getnframes() == w.getframerate()  # one second
    info = json.loads(json.dumps(object_info))
    info["LoadImage"]["input"]["required"]["image"][0].extend(n for n in comfy.uploads if n.endswith(".png"))
    info["LoadAudio"]["input"]["required"]["audio"][0].extend(n for n in comfy.uploads if n.endswith(".wav"))
    check = validate_prompt(comfy.graph, info)
    assert check.ok and check.node_errors == {}, (check.error, check.node_errors)
