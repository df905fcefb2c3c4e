"""Request features a manifest maps onto its graph: `camera_motion` (a camera-pose input or prompt
phrasing) and `quality_preset` (parameter values and optionally another workflow).

Everything here is data the manifest declares (`[camera]`, `[presets.<name>]`), kept as typed attributes
so a workflow can be described (`GET /workflows/{name}`) without reading its TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CAMERA_MOVES: tuple[str, ...] = (
    "pan_left",
    "pan_right",
    "pan_up",
    "pan_down",
    "zoom_in",
    "zoom_out",
    "dolly_in",
    "dolly_out",
    "orbit_left",
    "orbit_right",
    "crane_up",
    "crane_down",
    "static",
    "handheld",
)
# Prompt phrasing per move (English), from the reference's camera table: [SP] = Wan 2.2's official
# prompt-extension system prompt, [T] = a ComfyUI template prompt, [conv] = ordinary film vocabulary.
CAMERA_PHRASES: dict[str, str] = {
    "pan_left": "the camera pans left",  # [SP] pattern
    "pan_right": "the camera pans right",  # [SP]
    "pan_up": "the camera pans up",  # [SP] verbatim
    "pan_down": "the camera tilts downward",  # [SP] verbatim
    "zoom_in": "the camera slowly zooms in",  # [T]/[conv]
    "zoom_out": "the camera slowly zooms out",  # [conv]
    "dolly_in": "the camera pushes forward",  # [SP]
    "dolly_out": "the camera pulls back",  # [SP] verbatim
    "orbit_left": "the camera circles around the subject to the left",  # [T], direction [conv]
    "orbit_right": "the camera circles around the subject to the right",  # [T], direction [conv]
    "crane_up": "the camera moves upward",  # [SP]
    "crane_down": "the camera moves downward",  # [SP] pattern
    "static": "static camera",  # [T]
    "handheld": "handheld camera, gentle camera shake",  # [T]/[conv]
}
QUALITY_PRESETS: tuple[str, ...] = ("draft", "standard", "high", "ultra")


@dataclass(frozen=True)
class CameraSpec:
    """Which camera moves a workflow can do and how: `poses` (move -> the value of the bound
    `camera_pose` input) or prompt phrasing (`phrases`, the built-in table unless the manifest overrides)."""

    moves: tuple[str, ...] = CAMERA_MOVES
    poses: dict[str, str] = field(default_factory=dict)
    phrases: dict[str, str] = field(default_factory=lambda: dict(CAMERA_PHRASES))

    def how(self, move: str) -> tuple[str, str]:
        """("pose", value) or ("prompt", phrase) for a move the workflow can do."""
        if move in self.poses:
            return "pose", self.poses[move]
        return "prompt", self.phrases[move]

    def to_dict(self) -> dict[str, Any]:
        return {
            "moves": list(self.moves),
            "poses": dict(self.poses),
            "phrases": {m: self.phrases[m] for m in self.moves if m not in self.poses},
        }


@dataclass(frozen=True)
class PresetSpec:
    """One quality preset: request-field values, optionally another workflow to run instead, and the
    aesthetic terms `enhance_prompt` adds."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    workflow: str | None = None
    aesthetic: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"values": dict(self.values)}
        if self.workflow:
            out["workflow"] = self.workflow
        if self.aesthetic:
            out["aesthetic"] = list(self.aesthetic)
        return out


def add_phrase(prompt: str, phrase: str) -> str:
    """`prompt` with a camera phrase as its own sentence: "a fox runs. The camera pans left."."""
    text = prompt.rstrip()
    if text and text[-1] not in ".!?。！？":
        text += "."
    sentence = phrase[:1].upper() + phrase[1:]
    return f"{text} {sentence}." if text else f"{sentence}."
