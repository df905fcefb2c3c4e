"""`comfyfleet workflow list|render|check`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import cli, main
from app.comfy.graph_check import validate_prompt
from app.errors import ValidationError
from tests.workflows.conftest import SHIPPED

runner = CliRunner()


def test_list_table():
    result = runner.invoke(cli, ["workflow", "list"])
    assert result.exit_code == 0, result.output
    assert SHIPPED in result.output and "ComfyUI-GGUF@795e451" in result.output


def test_list_json():
    result = runner.invoke(cli, ["workflow", "list", "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = [w for w in json.loads(result.output) if w["name"] == SHIPPED]
    assert entry["video_node"] == "108" and entry["progress_nodes"] == ["86", "85"]
    assert len(entry["models"]) == 6 and entry["params"]["num_frames"]["default"] == 81


def test_render_prints_a_graph_the_real_schemas_accept(object_info_wan):
    result = runner.invoke(
        cli,
        [
            "workflow",
            "render",
            SHIPPED,
            "--prompt",
            "a fox",
            "--image-name",
            "wan22_i2v_start.png",
            "--frames",
            "49",
            "--width",
            "640",
            "--height",
            "640",
            "--steps",
            "6",
            "--cfg",
            "1.5",
            "--seed",
            "42",
            "--fps",
            "24",
            "--negative-prompt",
            "blurry",
        ],
    )
    assert result.exit_code == 0, result.output
    graph = json.loads(result.output)
    assert graph["98"]["inputs"]["length"] == 49 and graph["86"]["inputs"]["noise_seed"] == 42
    assert graph["86"]["inputs"]["end_at_step"] == 3 and graph["85"]["inputs"]["end_at_step"] == 6
    assert graph["108"]["inputs"]["frame_rate"] == 24 and graph["89"]["inputs"]["text"] == "blurry"
    check = validate_prompt(graph, object_info_wan)
    assert check.status_code == 200 and check.node_errors == {}


def test_render_json_reports_the_resolved_seed():
    result = runner.invoke(
        cli,
        [
            "workflow",
            "render",
            SHIPPED,
            "--prompt",
            "x",
            "--image-name",
            "i.png",
            "--image-size",
            "480x832",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["workflow"] == SHIPPED and len(out["graph_sha256"]) == 64
    assert 0 <= out["params"]["seed"] < 2**53
    assert out["prompt"]["86"]["inputs"]["noise_seed"] == out["params"]["seed"]
    assert (out["params"]["width"], out["params"]["height"]) == (480, 832)


def test_render_out_of_range_exits_2_naming_the_field(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["workflow", "render", SHIPPED, "--prompt", "x", "--image-name", "i.png", "--width", "650"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: width: must be a multiple of 16") and "\n" not in err


def test_render_bad_frames_raises_validation_error():
    result = runner.invoke(
        cli, ["workflow", "render", SHIPPED, "--prompt", "x", "--image-name", "i", "--frames", "80"]
    )
    assert isinstance(result.exception, ValidationError) and result.exception.field == "num_frames"


def test_render_unknown_workflow_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["workflow", "render", "nope", "--prompt", "x", "--image-name", "i.png"])
    assert exc.value.code == 2 and "workflow: unknown workflow 'nope'" in capsys.readouterr().err


def test_check_against_object_info(fixtures_dir):
    path = fixtures_dir / "comfyui" / "object_info_wan.json"
    result = runner.invoke(cli, ["workflow", "check", SHIPPED, "--object-info", str(path)])
    assert result.exit_code == 0, result.output
    assert "accepted" in result.output


def test_check_reports_missing_model(tmp_path, object_info_wan):
    object_info_wan["VAELoader"]["input"]["required"]["vae_name"][0].remove("wan_2.1_vae.safetensors")
    path = tmp_path / "oi.json"
    path.write_text(json.dumps(object_info_wan))
    result = runner.invoke(cli, ["workflow", "check", SHIPPED, "--object-info", str(path)])
    assert result.exit_code == 1
    assert json.loads(result.output)["node_errors"]["90"]["errors"][0]["type"] == "value_not_in_list"
