"""`comfyfleet sim comfy` serves the emulator standalone and rejects bad input with a typed error."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import cli
from app.errors import ValidationError
from tests.sim_comfyui.helpers import make_comfy_dir


def test_sim_comfy_serves_and_reports_installed_nodes(tmp_path):
    root = make_comfy_dir(tmp_path / "ComfyUI")
    result = CliRunner().invoke(
        cli, ["sim", "comfy", "--dir", str(root), "--port", "0", "--json", "--max-seconds", "0.05"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output.strip().splitlines()[0])
    assert info["url"].startswith("http://127.0.0.1:") and not info["url"].endswith(":0")
    assert info["custom_nodes"] == ["ComfyUI-GGUF", "comfyui-videohelpersuite", "websocket_image_save"]
    assert info["simulated"] is True


def test_sim_comfy_missing_object_info_is_a_validation_error(tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "sim",
            "comfy",
            "--dir",
            str(tmp_path),
            "--object-info",
            str(tmp_path / "nope.json"),
            "--max-seconds",
            "0",
        ],
    )
    assert isinstance(result.exception, ValidationError)
    assert "object_info" in str(result.exception)
