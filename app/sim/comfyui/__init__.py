"""A ComfyUI 0.3.64 API emulator for the simulated world and the tests (see server.ComfyEmulator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.sim.comfyui.faults import ComfyFaults
from app.sim.comfyui.server import ComfyEmulator

# object_info captured from a real ComfyUI 0.3.64 with ComfyUI-GGUF + VideoHelperSuite (the Wan nodes)
DEFAULT_OBJECT_INFO = Path(__file__).with_name("object_info_wan.json")


def default_object_info() -> dict[str, Any]:
    """A fresh copy of the shipped node schemas (callers may mutate it)."""
    return json.loads(DEFAULT_OBJECT_INFO.read_text())


__all__ = ["DEFAULT_OBJECT_INFO", "ComfyEmulator", "ComfyFaults", "default_object_info"]
