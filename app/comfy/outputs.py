"""Find a prompt's result files in ComfyUI's history outputs, and describe a finished prompt.

Output shapes vary by node: VHS_VideoCombine reports under `gifs`, SaveVideo/SaveImage under `images`
(+ `animated`), some nodes under `videos` or `files`. Every entry has `filename`, `subfolder` and `type`;
`temp` entries are previews, not results, unless a prompt produced nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

OUTPUT_KEYS = ("gifs", "videos", "images", "files")
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".webp"}
_TRUE_VIDEO = {".mp4", ".webm", ".mkv", ".mov", ".avi"}


@dataclass(frozen=True)
class OutputFile:
    node_id: str
    filename: str
    subfolder: str
    type: str  # output | temp | input
    key: str  # gifs | videos | images | files
    format: str | None = None

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.filename).suffix.lower()

    @property
    def is_video(self) -> bool:
        if self.format and self.format.startswith("video/"):
            return True
        return self.suffix in _TRUE_VIDEO

    def view_params(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


def find_outputs(outputs: Mapping[str, Any], *, include_temp: bool = False) -> list[OutputFile]:
    """Result files in history order; `temp` ones only if asked or if there is nothing else."""
    found: list[OutputFile] = []
    for node_id, ui in outputs.items():
        if not isinstance(ui, Mapping):
            continue
        for key in OUTPUT_KEYS:
            for entry in ui.get(key) or []:
                if not isinstance(entry, Mapping) or not entry.get("filename"):
                    continue
                fmt = entry.get("format")
                found.append(
                    OutputFile(
                        node_id=str(node_id),
                        filename=str(entry["filename"]),
                        subfolder=str(entry.get("subfolder") or ""),
                        type=str(entry.get("type") or "output"),
                        key=key,
                        format=str(fmt) if fmt else None,
                    )
                )
    if include_temp:
        return found
    results = [o for o in found if o.type != "temp"]
    return results or found


def execution_seconds(status: Mapping[str, Any]) -> float | None:
    """ComfyUI's own execution time: execution_start .. execution_success/error timestamps (ms)."""
    start = end = None
    for item in status.get("messages") or []:
        if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[1], Mapping):
            continue
        event, data = item
        ts = data.get("timestamp")
        if not isinstance(ts, int | float):
            continue
        if event == "execution_start":
            start = ts
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            end = ts
    if start is None or end is None:
        return None
    return max(0.0, (end - start) / 1000.0)


@dataclass
class PromptResult:
    """A prompt that finished successfully."""

    prompt_id: str
    outputs: list[OutputFile]
    raw_outputs: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    cached_nodes: list[str] = field(default_factory=list)
    number: int | float | None = None
    client_id: str | None = None

    @property
    def execution_s(self) -> float | None:
        return execution_seconds(self.status)

    @property
    def fully_cached(self) -> bool:
        return bool(self.cached_nodes) and all(o.node_id in self.cached_nodes for o in self.outputs)

    def videos(self) -> list[OutputFile]:
        return [o for o in self.outputs if o.is_video]

    def video(self, node_id: str | None = None) -> OutputFile | None:
        """The (first) video output, of `node_id` if given."""
        for o in self.outputs:
            if o.is_video and (node_id is None or o.node_id == node_id):
                return o
        return None

    def of_node(self, node_id: str) -> list[OutputFile]:
        return [o for o in self.outputs if o.node_id == node_id]
