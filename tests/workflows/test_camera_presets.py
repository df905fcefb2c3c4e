"""camera_motion and quality_preset against every workflow (issue 11): each move is applied (a pose on
the camera node, or phrasing in the prompt) or refused with a 422 naming the moves the workflow can do;
each preset fills values (explicit fields win), may switch the workflow, and the plan reports it."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.errors import ValidationError
from app.workflows import get_workflow
from app.workflows.features import CAMERA_MOVES, CAMERA_PHRASES, QUALITY_PRESETS
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
POSES = {
    "pan_left": "Pan Left",
    "pan_right": "Pan Right",
    "pan_up": "Pan Up",
    "pan_down": "Pan Down",
    "zoom_in": "Zoom In",
    "zoom_out": "Zoom Out",
    "dolly_in": "Zoom In",
    "dolly_out": "Zoom Out",
    "crane_up": "Pan Up",
    "crane_down": "Pan Down",
    "static": "Static",
}


def lookup(name: str):
    return get_workflow(name, Settings())


def plan(name: str, **fields):
    wf = lookup(name)
    given = {n: n for n in wf.inputs.taken if wf.inputs.spec(n).required}
    return plan_request(
        lookup,
        name,
        {"prompt": "a fox runs through snow", **fields},
        given=given,
        image_size=(640, 480),
        audio_seconds=3.0 if "audio" in given else None,
    )


def render(p):
    names = {f"{n}_name": f"{n}.bin" for n in p.inputs if n != "image"}
    return p.workflow.render(
        p.params.with_resolved_seed(),
        "image.png" if "image" in p.inputs else None,
        "x",
        audio_seconds=p.audio_seconds,
        camera_pose=p.camera_pose,
        **names,
    )


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("move", CAMERA_MOVES)
def test_every_move_on_every_workflow(name, move):
    if name == "wan22_fun_camera" and move not in POSES:
        with pytest.raises(ValidationError) as exc:
            plan(name, camera_motion=move)
        assert exc.value.field == "camera_motion"
        assert f"cannot do {move}" in exc.value.reason
        for can in POSES:
            assert can in exc.value.reason
        return
    p = plan(name, camera_motion=move)
    graph = render(p)
    if name == "wan22_fun_camera":
        assert p.camera_pose == POSES[move] and graph["87"]["inputs"]["camera_pose"] == POSES[move]
        assert p.params.prompt == "a fox runs through snow"  # the pose carries the move
        assert p.applied["camera_motion"] == {"move": move, "pose": POSES[move]}
    else:
        phrase = CAMERA_PHRASES[move]
        assert p.camera_pose is None
        assert p.params.prompt == f"a fox runs through snow. {phrase[0].upper()}{phrase[1:]}."
        assert p.applied["camera_motion"] == {"move": move, "phrase": phrase}
        prompt_node = p.workflow.bindings["prompt"][0]
        assert graph[prompt_node[0]]["inputs"][prompt_node[1]] == p.params.prompt


@pytest.mark.parametrize("bad", ["spin", "Pan Left", 3, ""])
def test_unknown_move_names_the_field_and_the_moves(bad):
    with pytest.raises(ValidationError) as exc:
        plan("wan22_t2v_lightx2v_gguf", camera_motion=bad)
    assert exc.value.field == "camera_motion" and "pan_left" in exc.value.reason


def test_fun_camera_without_a_move_keeps_the_template_pose():
    p = plan("wan22_fun_camera")
    assert p.camera_pose is None and render(p)["87"]["inputs"]["camera_pose"] == "Zoom In"


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("preset", QUALITY_PRESETS)
def test_every_preset_on_every_workflow(name, preset):
    spec = lookup(name).presets[preset]
    p = plan(name, quality_preset=preset)
    target = spec.workflow or name
    assert p.workflow.name == target
    report = p.applied["quality_preset"]
    assert report["name"] == preset and report["workflow"] == target
    for key, value in spec.values.items():
        assert getattr(p.params, key) == value
        assert report["values"][key] == value
    if not spec.values:  # standard: the workflow's own defaults
        assert p.params.steps == p.workflow.limits["steps"].default
    render(p)  # renders on the target workflow


@pytest.mark.parametrize("name", FAMILY)
def test_explicit_fields_win_over_the_preset(name):
    p = plan(name, quality_preset="ultra", steps=3, crf=30)
    assert (p.params.steps, p.params.crf) == (3, 30)
    assert set(p.applied["quality_preset"]["overridden_by_request"]) >= {"steps"} & set(
        lookup(name).presets["ultra"].values
    )


def test_high_on_i2v_runs_the_hq_workflow_with_its_defaults():
    p = plan("wan22_i2v_lightx2v_gguf", quality_preset="high")
    assert p.workflow.name == "wan22_i2v_hq_gguf"
    assert (p.params.steps, p.params.cfg_scale) == (20, 3.5)
    graph = render(p)
    assert not any(n["class_type"] == "LoraLoaderModelOnly" for n in graph.values())


@pytest.mark.parametrize("bad", ["best", 1, "HIGH"])
def test_unknown_preset_names_the_field(bad):
    with pytest.raises(ValidationError) as exc:
        plan("wan22_i2v_lightx2v_gguf", quality_preset=bad)
    assert exc.value.field == "quality_preset" and "draft" in exc.value.reason


def test_preset_and_move_together():
    p = plan("wan22_i2v_lightx2v_gguf", quality_preset="draft", camera_motion="orbit_left")
    assert p.params.steps == 2 and "circles around the subject to the left" in p.params.prompt


@pytest.mark.parametrize("name", FAMILY)
def test_output_format_and_crf(name):
    p = plan(name, output_format="webm", crf=25)
    graph = render(p)
    node = graph[p.workflow.video_node]["inputs"]
    assert (node["format"], node["crf"]) == ("video/webm", 25)
    default = render(plan(name))[p.workflow.video_node]["inputs"]
    assert (default["format"], default["crf"]) == ("video/h264-mp4", 18)
    for field, bad in (("output_format", "avi"), ("crf", 52), ("crf", -1)):
        with pytest.raises(ValidationError) as exc:
            plan(name, **{field: bad})
        assert exc.value.field == field
