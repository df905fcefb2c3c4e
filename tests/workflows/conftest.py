"""Fixtures of the workflows room: the captured ComfyUI node schemas and the shipped workflow."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.config import SHIPPED_WORKFLOWS_DIR

SHIPPED = "wan22_i2v_lightx2v_gguf"


def strip_tracebacks(value):
    """Tracebacks name the real server's files and lines; everything else must match exactly."""
    if isinstance(value, dict):
        return {k: ("<traceback>" if k == "traceback" else strip_tracebacks(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_tracebacks(v) for v in value]
    return value


@pytest.fixture(scope="session")
def object_info_full(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "comfyui" / "object_info_full.json").read_text())


@pytest.fixture(scope="session")
def _object_info_wan(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "comfyui" / "object_info_wan.json").read_text())


@pytest.fixture
def object_info_wan(_object_info_wan) -> dict:
    """The Wan node schemas of the real server (model placeholders present), with the start image uploaded."""
    info = copy.deepcopy(_object_info_wan)
    images = info["LoadImage"]["input"]["required"]["image"][0]
    images.append("wan22_i2v_start.png")
    images.sort()
    return info


@pytest.fixture(scope="session")
def template_graph(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "comfyui" / "wan22_i2v_gguf_api.json").read_text())


@pytest.fixture
def shipped_dir() -> Path:
    return SHIPPED_WORKFLOWS_DIR / SHIPPED
