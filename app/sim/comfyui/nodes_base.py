"""Values that flow between emulated nodes, and the failure a node raises.

Nothing here holds tensors: an IMAGE is a lazy frame source (so an 81-frame 640x640 video never sits in
memory), a LATENT remembers the geometry WanImageToVideo asked for, models are just names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


class NodeFailure(Exception):
    """An exception inside a node: becomes a real-shaped `execution_error`."""

    def __init__(self, exception_type: str, message: str, traceback: list[str] | None = None) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.exception_message = message
        self.traceback = traceback or []


@dataclass
class Frames:
    """An IMAGE batch: `count` frames of width x height, produced on demand by `render(i)`."""

    count: int
    width: int
    height: int
    render: Callable[[int], Image.Image]

    def frame(self, index: int) -> Image.Image:
        return self.render(index)

    def __str__(self) -> str:  # what ComfyUI's current_inputs formatting shows for a tensor
        return f"tensor(shape=[{self.count}, {self.height}, {self.width}, 3])"


@dataclass
class Latent:
    width: int
    height: int
    length: int = 1
    batch: int = 1
    start_image: Frames | None = None
    seed: int = 0
    steps_done: list[str] = field(default_factory=list)
    prompt: str = ""  # the positive conditioning's text: with the seed, what makes this clip differ
    end_image: Frames | None = None  # first-last-frame: the clip ends on this image
    camera: str | None = None  # Fun Camera: the pose the clip follows


@dataclass
class Audio:
    """An AUDIO value (LoadAudio): the decoded file's path and length."""

    path: str
    seconds: float
    sample_rate: int

    def __str__(self) -> str:
        samples = round(self.seconds * self.sample_rate)
        return f"{{'waveform': tensor(shape=[1, 1, {samples}]), 'sample_rate': {self.sample_rate}}}"


@dataclass
class ModelRef:
    kind: str
    name: str
    extras: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"<{self.kind} {self.name} object at 0x7f00c0ffee00>"


@dataclass
class Video:
    """A VIDEO value (core CreateVideo): frames plus a frame rate."""

    frames: Frames
    fps: float
