"""The files a workflow takes (start image, end image, audio), as its manifest's `[inputs]` declares them.

The request model, validation, upload and the cache key all follow from this: a workflow that takes no
image refuses one, a workflow that needs audio refuses a request without it, and each given file's
sha256 goes into the cache key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["required", "optional", "none"]
MODES: tuple[str, ...] = ("required", "optional", "none")
# Input name -> the API fields that carry it (URL, base64) and the CLI option.
INPUT_NAMES: tuple[str, ...] = ("image", "end_image", "audio")
API_INPUT_FIELDS: dict[str, tuple[str, str]] = {
    "image": ("image_url", "image_base64"),
    "end_image": ("end_image_url", "end_image_base64"),
    "audio": ("audio_url", "audio_base64"),
}
INPUT_KINDS: dict[str, Literal["image", "audio"]] = {"image": "image", "end_image": "image", "audio": "audio"}


@dataclass(frozen=True)
class InputSpec:
    """One file input: required / optional / none, and what the graph loses when an optional one is absent
    (`when_absent`: [node_id, input_name] links removed; nodes left without a path to the output are
    pruned)."""

    name: str
    mode: Mode
    when_absent: tuple[tuple[str, str], ...] = ()

    @property
    def taken(self) -> bool:
        return self.mode != "none"

    @property
    def required(self) -> bool:
        return self.mode == "required"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "kind": INPUT_KINDS[self.name]}
        out["fields"] = list(API_INPUT_FIELDS[self.name])
        if self.when_absent:
            out["when_absent"] = [list(b) for b in self.when_absent]
        return out


@dataclass(frozen=True)
class Inputs:
    """Every file input of a workflow. Defaults: an image is required, nothing else is taken."""

    image: InputSpec = field(default_factory=lambda: InputSpec("image", "required"))
    end_image: InputSpec = field(default_factory=lambda: InputSpec("end_image", "none"))
    audio: InputSpec = field(default_factory=lambda: InputSpec("audio", "none"))
    max_audio_seconds: float | None = None  # the workflow's own limit (the server's applies too)

    def spec(self, name: str) -> InputSpec:
        return {"image": self.image, "end_image": self.end_image, "audio": self.audio}[name]

    @property
    def all(self) -> tuple[InputSpec, ...]:
        return (self.image, self.end_image, self.audio)

    @property
    def taken(self) -> list[str]:
        return [s.name for s in self.all if s.taken]

    def describe(self) -> str:
        """`image, end_image` / `image?` / `audio, image`: what `workflow list` shows."""
        parts = [s.name + ("" if s.required else "?") for s in self.all if s.taken]
        return ", ".join(parts) or "text only"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {s.name: s.to_dict() for s in self.all}
        if self.max_audio_seconds is not None:
            out["max_audio_seconds"] = self.max_audio_seconds
        return out


def inputs_digest(shas: Mapping[str, str]) -> str:
    """The cache key's input part: the image's own sha256 when it is the only file (so keys of image-only
    requests stay what they were), otherwise a sha256 over `name=sha` of each given file; "text only"
    requests hash the empty set."""
    given = {k: v for k, v in shas.items() if v}
    if set(given) == {"image"}:
        return given["image"]
    text = ";".join(f"{k}={given[k]}" for k in sorted(given))
    return hashlib.sha256(f"inputs:{text}".encode()).hexdigest()
