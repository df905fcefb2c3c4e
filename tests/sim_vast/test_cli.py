"""`comfyfleet sim vast` serves the emulator and prints where and with which (simulated) key."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import cli
from app.errors import ValidationError


def test_sim_vast_prints_url_and_key_as_json() -> None:
    result = CliRunner().invoke(
        cli,
        ["sim", "vast", "--port", "0", "--offers", "5", "--api-key", "k1", "--max-seconds", "0.1", "--json"],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output.strip().splitlines()[0])
    assert (
        info["url"].startswith("http://127.0.0.1:") and info["api_key"] == "k1" and info["simulated"] is True
    )


def test_sim_vast_human_output_generates_a_key() -> None:
    result = CliRunner().invoke(cli, ["sim", "vast", "--port", "0", "--offers", "3", "--max-seconds", "0.1"])
    assert result.exit_code == 0, result.output
    assert "Simulated Vast.ai API at http://127.0.0.1:" in result.output
    assert "API key (simulated): sim-" in result.output


def test_sim_vast_rejects_negative_time_scale() -> None:
    result = CliRunner().invoke(
        cli, ["sim", "vast", "--port", "0", "--time-scale", "-1", "--max-seconds", "0.1"]
    )
    assert isinstance(result.exception, ValidationError) and result.exception.field == "time_scale"
