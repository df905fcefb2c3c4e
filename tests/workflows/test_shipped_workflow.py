"""The shipped Wan 2.2 workflow: what it needs, and that every rendering passes the real node schemas."""

from __future__ import annotations

import pytest

from app.comfy.graph_check import validate_prompt
from app.config import get_settings
from app.workflows import CustomNode, ModelFile, get_workflow, load_workflows
from tests.workflows.conftest import SHIPPED

IMAGE = "wan22_i2v_start.png"


@pytest.fixture
def wf():
    return get_workflow(SHIPPED, get_settings())


def _render(wf, raw, image_size=None, seed_rng_seed=0):
    import random

    params = wf.validate(raw, image_size).with_resolved_seed(random.Random(seed_rng_seed))
    return params, wf.render(params, IMAGE, "comfyfleet/job-1")


def test_shipped_workflow_is_listed():
    assert SHIPPED in load_workflows(get_settings())


def test_unknown_workflow_names_the_field():
    from app.errors import ValidationError

    with pytest.raises(ValidationError) as exc:
        get_workflow("nope", get_settings())
    assert exc.value.field == "workflow" and SHIPPED in str(exc.value)


def test_default_render_is_the_accepted_template_with_values_bound(wf, template_graph):
    params, graph = _render(wf, {"prompt": "a red fox runs"})
    assert set(graph) == set(template_graph)
    assert graph["93"]["inputs"]["text"] == "a red fox runs"
    assert graph["97"]["inputs"]["image"] == IMAGE
    assert graph["108"]["inputs"]["filename_prefix"] == "comfyfleet/job-1"
    assert graph["86"]["inputs"]["noise_seed"] == params.seed
    assert graph["108"]["inputs"]["crf"] == 18  # the request's crf (issue 11: H.264 at CRF 18 by default)
    # everything not bound is exactly the template the real server accepted
    for node_id, node in template_graph.items():
        assert graph[node_id]["class_type"] == node["class_type"]
        for key in (
            "unet_name",
            "lora_name",
            "clip_name",
            "vae_name",
            "shift",
            "sampler_name",
            "scheduler",
            "add_noise",
            "return_with_leftover_noise",
            "format",
            "pix_fmt",
            "save_output",
            "loop_count",
            "type",
            "strength_model",
        ):
            if key in node["inputs"]:
                assert graph[node_id]["inputs"][key] == node["inputs"][key], (node_id, key)


def test_two_sampler_passes_split_at_half_the_steps(wf):
    _, graph = _render(wf, {"prompt": "x", "steps": 8})
    high, low = graph["86"]["inputs"], graph["85"]["inputs"]
    assert (high["add_noise"], high["start_at_step"], high["end_at_step"]) == ("enable", 0, 4)
    assert high["return_with_leftover_noise"] == "enable"
    assert (low["add_noise"], low["start_at_step"], low["end_at_step"]) == ("disable", 4, 8)
    assert low["return_with_leftover_noise"] == "disable"
    assert high["steps"] == low["steps"] == 8
    assert high["sampler_name"] == low["sampler_name"] == "euler"


@pytest.mark.parametrize(
    "raw",
    [
        {"prompt": "x"},
        {
            "prompt": "x",
            "width": 1280,
            "height": 720,
            "num_frames": 161,
            "steps": 40,
            "cfg_scale": 10,
            "fps": 60,
        },
        {
            "prompt": "x",
            "width": 256,
            "height": 256,
            "num_frames": 5,
            "steps": 2,
            "cfg_scale": 0,
            "fps": 4,
            "seed": 0,
            "negative_prompt": "",
        },
        {"prompt": "ü" * 2000, "steps": 3, "seed": 2**53 - 1},
    ],
)
def test_rendered_graph_passes_real_node_schemas(wf, object_info_wan, raw):
    _, graph = _render(wf, raw, image_size=(1920, 1080))
    check = validate_prompt(graph, object_info_wan)
    assert check.status_code == 200, check.node_errors
    assert check.node_errors == {} and check.outputs == [wf.video_node]


def test_rendered_graph_without_model_files_is_rejected(wf, object_info_wan):
    object_info_wan["UnetLoaderGGUF"]["input"]["required"]["unet_name"][0].clear()
    _, graph = _render(wf, {"prompt": "x"})
    check = validate_prompt(graph, object_info_wan)
    assert check.status_code == 400 and set(check.node_errors) == {"95", "96"}


def test_render_does_not_change_the_workflow(wf):
    before = wf.graph
    _render(wf, {"prompt": "changed", "steps": 10})
    assert wf.graph == before


def test_render_requires_a_resolved_seed(wf):
    params = wf.validate({"prompt": "x"})
    with pytest.raises(ValueError, match="seed"):
        wf.render(params, IMAGE, "p")


def test_render_requires_an_image_name(wf):
    params = wf.validate({"prompt": "x", "seed": 1})
    with pytest.raises(ValueError, match="image_name"):
        wf.render(params, "", "p")


def test_outputs_and_progress_nodes(wf):
    assert wf.video_node == "108" and wf.last_frame_node is None
    assert wf.progress_nodes == ["86", "85"]
    graph = wf.graph
    assert graph[wf.video_node]["class_type"] == "VHS_VideoCombine"
    assert [graph[n]["class_type"] for n in wf.progress_nodes] == ["KSamplerAdvanced"] * 2


def test_models_are_the_six_files(wf):
    assert len(wf.models) == 6 and all(isinstance(m, ModelFile) for m in wf.models)
    by_name = {m.name: m for m in wf.models}
    assert by_name["Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"].folder == "unet"
    assert by_name["nsfw_wan_umt5-xxl_fp8_scaled.safetensors"].folder == "text_encoders"
    assert by_name["wan_2.1_vae.safetensors"].url == (
        "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
        "wan_2.1_vae.safetensors"
    )
    assert all(
        m.url.startswith("https://huggingface.co/") and m.url.endswith("/" + m.name) for m in wf.models
    )
    assert all(m.sha256 is None for m in wf.models)
    assert wf.disk_bytes == sum(m.size for m in wf.models) and 20e9 < wf.disk_bytes < 30e9


def test_every_model_file_is_used_by_the_graph(wf):
    values = {v for node in wf.graph.values() for v in node["inputs"].values() if isinstance(v, str)}
    assert {m.name for m in wf.models} <= values


def test_custom_nodes_match_the_servers_python_modules(wf, object_info_wan):
    assert all(isinstance(c, CustomNode) for c in wf.custom_nodes)
    packs = {c.name: c for c in wf.custom_nodes}
    assert packs["ComfyUI-GGUF"].commit == "795e451"
    assert (
        packs["comfyui-videohelpersuite"].git_url == "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite"
    )
    for pack in wf.custom_nodes:
        for node_type in pack.node_types:
            assert object_info_wan[node_type]["python_module"] == f"custom_nodes.{pack.name}"
    core = wf.node_types - {t for c in wf.custom_nodes for t in c.node_types}
    assert all(not object_info_wan[t]["python_module"].startswith("custom_nodes.") for t in core)


def test_graph_sha256_is_stable(wf):
    get_settings.cache_clear()
    again = get_workflow(SHIPPED, get_settings())
    assert again.graph_sha256 == wf.graph_sha256 and len(wf.graph_sha256) == 64
