"""A loaded workflow: its API graph, what it needs (models, custom nodes) and how requests bind into it."""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.workflows.derive import evaluate
from app.workflows.features import CameraSpec, PresetSpec
from app.workflows.inputs import Inputs
from app.workflows.params import ParamSpec, WorkflowParams, validate_params

Binding = tuple[str, str]  # (node_id, input_name)
# Values measured from the request's files that [derived] expressions may use (integers).
MEASURED_NAMES = ("audio_ms",)


@dataclass(frozen=True)
class Repeat:
    """A block of nodes the graph holds once and a job needs `count` times (S2V's Extend chunks)."""

    nodes: tuple[str, ...]
    output: tuple[str, int]
    chain: tuple[Binding, ...]
    source: tuple[str, int]  # what the block's chain inputs read in graph.json (feeds the first copy)
    count: str  # a [derived] name
    max: int = 64

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "output": list(self.output),
            "chain": [list(c) for c in self.chain],
            "count": self.count,
            "max": self.max,
        }

    def apply(self, graph: dict[str, Any], count: int) -> dict[str, Any]:
        """The graph with the block present `count` times, chained. Node ids of copy k (k >= 2) are
        `"<id>#k"`; the original ids stay for copy 1. Cost is linear in graph size times count."""
        count = max(0, int(count))
        block = set(self.nodes)
        out_id, out_slot = self.output
        if count == 0:
            last: list[Any] = [self.source[0], self.source[1]]
            graph = {k: v for k, v in graph.items() if k not in block}
        else:
            prev = out_id
            for k in range(2, count + 1):
                ids = {n: f"{n}#{k}" for n in self.nodes}
                for n in self.nodes:
                    node = copy.deepcopy(graph[n])
                    for name, value in node["inputs"].items():
                        if isinstance(value, list) and value and value[0] in block:
                            node["inputs"][name] = [ids[value[0]], value[1]]
                    for c_node, c_input in self.chain:
                        if c_node == n:
                            node["inputs"][c_input] = [prev, out_slot]
                    meta = node.get("_meta")
                    if isinstance(meta, dict) and "title" in meta:
                        node["_meta"] = {**meta, "title": f"{meta['title']} ({k})"}
                    graph[ids[n]] = node
                prev = ids[out_id]
            last = [prev, out_slot]
        if last != [out_id, out_slot]:
            for node_id, node in graph.items():
                if node_id in block or "#" in node_id:
                    continue
                for name, value in node["inputs"].items():
                    if isinstance(value, list) and value == [out_id, out_slot]:
                        node["inputs"][name] = list(last)
        return graph


@dataclass(frozen=True)
class ModelFile:
    """One model file a workflow needs under `models/<folder>/<name>`. `size` is expected/approx bytes."""

    name: str
    folder: str
    url: str
    size: int | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": self.folder,
            "url": self.url,
            "size": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class CustomNode:
    """A custom node pack, cloned into `custom_nodes/<name>` at `commit`; `node_types` the graph uses."""

    name: str
    git_url: str
    commit: str
    node_types: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "git_url": self.git_url,
            "commit": self.commit,
            "node_types": list(self.node_types),
        }


@dataclass(frozen=True, eq=False)
class Workflow:
    """A workflow folder (graph.json + manifest.toml), validated. Render it with validated params."""

    name: str
    version: str
    description: str
    path: Path
    graph_sha256: str
    models: list[ModelFile]
    custom_nodes: list[CustomNode]
    video_node: str
    last_frame_node: str | None
    progress_nodes: list[str]
    limits: dict[str, ParamSpec]
    bindings: dict[str, list[Binding]]
    derived: dict[str, str]
    auto_area: int | None
    source: str  # "shipped" | "user"
    inputs: Inputs
    repeat: Repeat | None
    camera: CameraSpec
    presets: dict[str, PresetSpec]
    _graph: dict[str, Any] = field(repr=False)
    _derived_trees: dict[str, ast.Expression] = field(repr=False)

    @property
    def node_types(self) -> set[str]:
        return {node["class_type"] for node in self._graph.values()}

    @property
    def disk_bytes(self) -> int:
        return sum(m.size or 0 for m in self.models)

    @property
    def graph(self) -> dict[str, Any]:
        """A copy of the graph as shipped (template values, nothing bound)."""
        return copy.deepcopy(self._graph)

    def validate(self, raw: Mapping[str, Any], image_size: tuple[int, int] | None = None) -> WorkflowParams:
        """Strictly validate request fields; raises `ValidationError(field, msg)` naming the field."""
        return validate_params(self.name, self.limits, raw, image_size, self.auto_area)

    def derived_values(self, params: WorkflowParams, audio_seconds: float | None = None) -> dict[str, Any]:
        """The request's values plus every [derived] one (and `audio_ms` for a workflow taking audio)."""
        values: dict[str, Any] = {k: v for k, v in params.normalized().items()}
        if self.inputs.audio.taken:
            values["audio_ms"] = round((audio_seconds or 0.0) * 1000)
        for name, tree in self._derived_trees.items():
            values[name] = evaluate(tree, values)
        return values

    def render(
        self,
        params: WorkflowParams,
        image_name: str | None,
        filename_prefix: str,
        *,
        end_image_name: str | None = None,
        audio_name: str | None = None,
        audio_seconds: float | None = None,
        camera_pose: str | None = None,
    ) -> dict[str, Any]:
        """The API graph for one job: a copy of the graph with every bound input set. File inputs are the
        names ComfyUI gave the uploads; an optional input left out cuts its `when_absent` links and the
        nodes that no longer lead to the video."""
        if not params.seed_resolved:
            raise ValueError(
                "seed -1 (random) must be resolved before rendering: use params.with_resolved_seed()"
            )
        if not isinstance(filename_prefix, str) or not filename_prefix:
            raise ValueError("filename_prefix must be a non-empty string")
        names = {"image": image_name, "end_image": end_image_name, "audio": audio_name}
        for spec in self.inputs.all:
            given = names[spec.name]
            if given is not None and (not isinstance(given, str) or not given):
                raise ValueError(f"{spec.name}_name must be the name ComfyUI gave the uploaded file")
            if spec.required and given is None:
                raise ValueError(f"{spec.name}_name must be the name ComfyUI gave the uploaded {spec.name}")
            if not spec.taken and given is not None:
                raise ValueError(f"workflow {self.name} takes no {spec.name}")
        if self.inputs.audio.taken and audio_seconds is None and audio_name is not None:
            raise ValueError(f"workflow {self.name} needs the audio's length (audio_seconds) to render")
        values = self.derived_values(params, audio_seconds)
        values.update({k: v for k, v in names.items() if v is not None})
        values["filename_prefix"] = filename_prefix
        if camera_pose is not None:
            if "camera_pose" not in self.bindings:
                raise ValueError(f"workflow {self.name} has no camera_pose binding")
            values["camera_pose"] = camera_pose
        for name, spec in self.limits.items():  # request values bound as the graph spells them
            if spec.choices is not None and values.get(name) in spec.choices:
                values[name] = spec.choices[values[name]]
        graph = copy.deepcopy(self._graph)
        for name, targets in self.bindings.items():
            if name not in values:
                continue
            for node_id, input_name in targets:
                graph[node_id]["inputs"][input_name] = values[name]
        if self.repeat is not None:
            count = int(values[self.repeat.count])
            if not 0 <= count <= self.repeat.max:
                raise ValueError(f"repeat count {count} is outside 0..{self.repeat.max}")
            graph = self.repeat.apply(graph, count)
        cut = False
        for spec in self.inputs.all:
            if spec.mode == "optional" and names[spec.name] is None:
                for node_id, input_name in spec.when_absent:
                    graph[node_id]["inputs"].pop(input_name, None)
                    cut = True
        return (
            prune(graph, [self.video_node, *([self.last_frame_node] if self.last_frame_node else [])])
            if cut
            else graph
        )

    def summary(self) -> dict[str, Any]:
        """What `workflow list --json` and the API show about a workflow."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "source": self.source,
            "path": str(self.path),
            "graph_sha256": self.graph_sha256,
            "disk_bytes": self.disk_bytes,
            "node_types": sorted(self.node_types),
            "video_node": self.video_node,
            "last_frame_node": self.last_frame_node,
            "progress_nodes": list(self.progress_nodes),
            "models": [m.to_dict() for m in self.models],
            "custom_nodes": [c.to_dict() for c in self.custom_nodes],
            "params": {name: spec.to_dict() for name, spec in self.limits.items()},
            "inputs": self.inputs.to_dict(),
            "repeat": self.repeat.to_dict() if self.repeat else None,
            "camera": self.camera.to_dict(),
            "presets": {name: p.to_dict() for name, p in self.presets.items()},
        }


def prune(graph: dict[str, Any], output_nodes: list[str]) -> dict[str, Any]:
    """The graph without the nodes whose outputs no longer reach an output node (after links were cut)."""
    keep: set[str] = set()
    stack = list(output_nodes)
    while stack:
        node_id = stack.pop()
        if node_id in keep or node_id not in graph:
            continue
        keep.add(node_id)
        for value in graph[node_id]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                stack.append(value[0])
    return {k: v for k, v in graph.items() if k in keep}
