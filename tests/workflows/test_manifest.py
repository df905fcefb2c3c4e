"""User workflows dropped into WORKFLOWS_DIR, and the errors a broken folder gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.comfy.graph_check import validate_prompt
from app.config import Settings
from app.workflows import WorkflowError, get_workflow, load_workflows
from tests.workflows.conftest import SHIPPED

TINY_GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "2": {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["1", 0],
            "upscale_method": "nearest-exact",
            "width": 512,
            "height": 512,
            "crop": "disabled",
        },
    },
    "3": {"class_type": "PrimitiveString", "inputs": {"value": "caption"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "tiny"}},
}

TINY_MANIFEST = """
name = "tiny_scale"
version = "0.1"
description = "Scales the image (a test workflow)"

[bindings]
prompt = [["3", "value"]]
image = [["1", "image"]]
width = [["2", "width"]]
height = [["2", "height"]]
filename_prefix = [["4", "filename_prefix"]]

[outputs]
video = "4"

[auto_size]
area = 65536

[params.prompt]
type = "string"
min_length = 1
max_length = 100

[params.width]
type = "int"
default = 256
min = 64
max = 512
multiple_of = 8

[params.height]
type = "int"
default = 256
min = 64
max = 512
multiple_of = 8
"""


def _write(root: Path, name: str, manifest: str, graph: dict | str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.toml").write_text(manifest, encoding="utf-8")
    (folder / "graph.json").write_text(
        graph if isinstance(graph, str) else json.dumps(graph), encoding="utf-8"
    )
    return folder


def _settings(root: Path) -> Settings:
    return Settings(workflows_dir=root)


def _load_error(tmp_path: Path, manifest: str, graph: dict | str = TINY_GRAPH, name="tiny_scale") -> str:
    root = tmp_path / "wf"
    _write(root, name, manifest, graph)
    with pytest.raises(WorkflowError) as exc:
        load_workflows(_settings(root))
    message = str(exc.value)
    assert str(root / name) in message  # always says which folder
    return message


def test_user_workflow_is_listed_and_renders(tmp_path, object_info_full):
    root = tmp_path / "wf"
    _write(root, "tiny_scale", TINY_MANIFEST, TINY_GRAPH)
    workflows = load_workflows(_settings(root))
    assert {SHIPPED, "tiny_scale"} <= set(workflows) and "tiny_scale" in workflows
    wf = workflows["tiny_scale"]
    assert wf.source == "user" and wf.models == [] and wf.custom_nodes == [] and wf.disk_bytes == 0
    params = wf.validate({"prompt": "hello"}, image_size=(400, 200))
    assert (params.width, params.height) == (360, 184)
    assert params.steps is None and params.seed is None
    graph = wf.render(params.with_resolved_seed(), "in.png", "out/x")
    assert graph["2"]["inputs"]["width"] == 360 and graph["3"]["inputs"]["value"] == "hello"
    check = validate_prompt(graph, object_info_full, file_exists=lambda ct, v: v == "in.png")
    assert check.ok and check.node_errors == {}


def test_user_workflow_rejects_fields_it_does_not_use(tmp_path):
    root = tmp_path / "wf"
    _write(root, "tiny_scale", TINY_MANIFEST, TINY_GRAPH)
    from app.errors import ValidationError

    with pytest.raises(ValidationError) as exc:
        get_workflow("tiny_scale", _settings(root)).validate({"prompt": "x", "steps": 4})
    assert exc.value.field == "steps" and "not used by workflow tiny_scale" in str(exc.value)


def test_user_copy_with_shipped_name_replaces_it(tmp_path, shipped_dir):
    root = tmp_path / "wf"
    shutil.copytree(shipped_dir, root / SHIPPED)
    manifest = root / SHIPPED / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('version = "1.0.0"', 'version = "1.0.1"'))
    shipped = get_workflow(SHIPPED, Settings())
    mine = get_workflow(SHIPPED, _settings(root))
    assert mine.source == "user" and mine.version == "1.0.1"
    assert mine.graph_sha256 != shipped.graph_sha256


def test_edited_manifest_is_reloaded(tmp_path):
    root = tmp_path / "wf"
    folder = _write(root, "tiny_scale", TINY_MANIFEST, TINY_GRAPH)
    first = get_workflow("tiny_scale", _settings(root))
    (folder / "manifest.toml").write_text(TINY_MANIFEST.replace("max_length = 100", "max_length = 50"))
    second = get_workflow("tiny_scale", _settings(root))
    assert second.limits["prompt"].max_length == 50 and second.graph_sha256 != first.graph_sha256


def test_folder_without_manifest_is_skipped(tmp_path):
    root = tmp_path / "wf"
    (root / "notes").mkdir(parents=True)
    assert SHIPPED in set(load_workflows(_settings(root)))


def test_workflows_dir_missing(tmp_path):
    with pytest.raises(WorkflowError, match="not a directory"):
        load_workflows(_settings(tmp_path / "absent"))


def test_binding_to_missing_node(tmp_path):
    msg = _load_error(
        tmp_path, TINY_MANIFEST.replace('width = [["2", "width"]]', 'width = [["99", "width"]]')
    )
    assert "bindings.width[0]: node '99' is not in graph.json" in msg


def test_binding_to_missing_input(tmp_path):
    msg = _load_error(tmp_path, TINY_MANIFEST.replace('width = [["2", "width"]]', 'width = [["2", "wdth"]]'))
    assert "bindings.width[0]" in msg and "has no input 'wdth'" in msg and "ImageScale" in msg


def test_binding_to_a_link(tmp_path):
    msg = _load_error(tmp_path, TINY_MANIFEST.replace('width = [["2", "width"]]', 'width = [["2", "image"]]'))
    assert "bindings.width[0]" in msg and "is a link" in msg


def test_binding_with_int_node_id(tmp_path):
    msg = _load_error(tmp_path, TINY_MANIFEST.replace('width = [["2", "width"]]', 'width = [[2, "width"]]'))
    assert "bindings.width[0]" in msg and "node ids are strings" in msg


def test_binding_of_unknown_field(tmp_path):
    msg = _load_error(tmp_path, TINY_MANIFEST + "\n[bindings.extra]\n")
    assert "bindings.extra" in msg


def test_input_bound_twice(tmp_path):
    msg = _load_error(
        tmp_path, TINY_MANIFEST.replace('height = [["2", "height"]]', 'height = [["2", "width"]]')
    )
    assert "bindings.height[0]" in msg and "already bound by width" in msg


def test_declared_param_not_bound(tmp_path):
    manifest = TINY_MANIFEST + '\n[params.steps]\ntype = "int"\ndefault = 4\nmin = 1\nmax = 10\n'
    assert "bindings.steps: is missing" in _load_error(tmp_path, manifest)


def test_bound_field_without_limits(tmp_path):
    manifest = TINY_MANIFEST.replace("[bindings]", '[bindings]\nsteps = [["2", "width"]]')
    assert "bindings.steps: bound, but [params.steps] declares no limits" in _load_error(tmp_path, manifest)


def test_prompt_binding_missing(tmp_path):
    manifest = TINY_MANIFEST.replace('prompt = [["3", "value"]]\n', "")
    assert "bindings.prompt: is required" in _load_error(tmp_path, manifest)


def test_default_outside_limits(tmp_path):
    manifest = TINY_MANIFEST.replace(
        "default = 256\nmin = 64\nmax = 512\nmultiple_of = 8\n\n[params.height]",
        "default = 250\nmin = 64\nmax = 512\nmultiple_of = 8\n\n[params.height]",
    )
    msg = _load_error(tmp_path, manifest)
    assert "params.width.default" in msg and "multiple of 8" in msg


def test_param_type_differs_from_api(tmp_path):
    manifest = TINY_MANIFEST.replace('[params.width]\ntype = "int"', '[params.width]\ntype = "float"')
    assert "params.width.type" in _load_error(tmp_path, manifest)


def test_unknown_param_key(tmp_path):
    manifest = TINY_MANIFEST.replace("max_length = 100", "max_length = 100\nmaximum = 3")
    assert "params.prompt: unknown keys ['maximum']" in _load_error(tmp_path, manifest)


def test_min_above_max(tmp_path):
    manifest = TINY_MANIFEST.replace(
        "default = 256\nmin = 64\nmax = 512", "default = 256\nmin = 600\nmax = 512"
    )
    assert "min 600 is above max 512" in _load_error(tmp_path, manifest)


def test_derived_expression_with_unknown_name(tmp_path):
    manifest = TINY_MANIFEST + '\n[derived]\nhalf = "steps // 2"\n'
    assert "derived.half: unknown name 'steps'" in _load_error(tmp_path, manifest)


def test_derived_expression_with_code(tmp_path):
    manifest = TINY_MANIFEST + "\n[derived]\nhalf = \"__import__('os').getcwd()\"\n"
    assert "derived.half" in _load_error(tmp_path, manifest)


def test_video_output_not_in_graph(tmp_path):
    manifest = TINY_MANIFEST.replace('video = "4"', 'video = "44"')
    assert "outputs.video: must be a node id in graph.json" in _load_error(tmp_path, manifest)


def test_progress_node_not_in_graph(tmp_path):
    manifest = TINY_MANIFEST.replace('video = "4"', 'video = "4"\nprogress_nodes = ["2", "9"]')
    assert "outputs.progress_nodes[1]: '9' is not a node id" in _load_error(tmp_path, manifest)


def test_name_differs_from_folder(tmp_path):
    msg = _load_error(tmp_path, TINY_MANIFEST, name="other_folder")
    assert "name: 'tiny_scale' must equal the folder name 'other_folder'" in msg


def test_manifest_not_toml(tmp_path):
    assert "manifest.toml is not valid TOML" in _load_error(tmp_path, "name = [unclosed")


def test_graph_not_json(tmp_path):
    assert "graph.json: is not valid JSON" in _load_error(tmp_path, TINY_MANIFEST, graph="{nope")


def test_graph_in_ui_format(tmp_path):
    msg = _load_error(tmp_path, TINY_MANIFEST, graph={"nodes": [], "links": [], "version": 0.4})
    assert "Export (API)" in msg


def test_graph_link_to_missing_node(tmp_path):
    graph = json.loads(json.dumps(TINY_GRAPH))
    graph["4"]["inputs"]["images"] = ["7", 0]
    assert "links to missing node '7'" in _load_error(tmp_path, TINY_MANIFEST, graph=graph)


def test_graph_node_without_class_type(tmp_path):
    graph = json.loads(json.dumps(TINY_GRAPH))
    del graph["3"]["class_type"]
    assert "node '3': has no class_type" in _load_error(tmp_path, TINY_MANIFEST, graph=graph)


def test_model_with_bad_url(tmp_path):
    manifest = TINY_MANIFEST + '\n[[models]]\nname = "a.safetensors"\nfolder = "vae"\nurl = "ftp://x/a"\n'
    assert "models[0].url: must be an http(s) URL" in _load_error(tmp_path, manifest)


def test_model_with_bad_sha256(tmp_path):
    manifest = TINY_MANIFEST + (
        '\n[[models]]\nname = "a.safetensors"\nfolder = "vae"\n'
        'url = "https://x/a.safetensors"\nsha256 = "abc"\n'
    )
    assert "models[0].sha256: must be 64 hex digits" in _load_error(tmp_path, manifest)


def test_model_name_with_path(tmp_path):
    manifest = TINY_MANIFEST + '\n[[models]]\nname = "../a"\nfolder = "vae"\nurl = "https://x/a"\n'
    assert "models[0].name: must be a plain file name" in _load_error(tmp_path, manifest)


def test_custom_node_with_bad_commit(tmp_path):
    manifest = TINY_MANIFEST + (
        '\n[[custom_nodes]]\nname = "Pack"\ngit_url = "https://github.com/x/pack"\ncommit = "main"\n'
    )
    assert "custom_nodes[0].commit" in _load_error(tmp_path, manifest)


def test_custom_node_type_not_in_graph(tmp_path):
    manifest = TINY_MANIFEST + (
        '\n[[custom_nodes]]\nname = "Pack"\ngit_url = "https://github.com/x/pack"\ncommit = "abcdef1"\n'
        'node_types = ["NotInGraph"]\n'
    )
    assert "custom_nodes[0].node_types: 'NotInGraph' is not used by graph.json" in _load_error(
        tmp_path, manifest
    )


def test_unknown_top_level_key(tmp_path):
    assert "unknown keys ['colour']" in _load_error(tmp_path, 'colour = "red"\n' + TINY_MANIFEST)


def test_broken_user_workflow_does_not_stop_the_others(tmp_path):
    root = tmp_path / "wf"
    _write(root, "tiny_scale", TINY_MANIFEST.replace('video = "4"', 'video = "44"'), TINY_GRAPH)
    assert get_workflow(SHIPPED, _settings(root)).name == SHIPPED
    with pytest.raises(WorkflowError, match=r"outputs\.video"):
        get_workflow("tiny_scale", _settings(root))
