"""Reading a workflow folder and checking its manifest against its graph.

A user drops a folder into WORKFLOWS_DIR; when something in it is wrong, the error must say which file,
which key and what to do (`bindings.width[0]: node '999' is not in graph.json`), not fail later on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.errors import ConfigError
from app.workflows.derive import ExpressionError, parse_expression
from app.workflows.features import CAMERA_MOVES, CAMERA_PHRASES, QUALITY_PRESETS, CameraSpec, PresetSpec
from app.workflows.inputs import INPUT_NAMES, MODES, Inputs, InputSpec
from app.workflows.model import MEASURED_NAMES, Binding, CustomNode, ModelFile, Repeat, Workflow
from app.workflows.params import API_FIELDS, ParamSpec

MANIFEST = "manifest.toml"
# bound from the job (uploads, output prefix) or the planner (camera pose), not from request params
JOB_FIELDS = ("image", "end_image", "audio", "filename_prefix", "camera_pose")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
_TOP_KEYS = {
    "name",
    "version",
    "description",
    "graph",
    "bindings",
    "derived",
    "outputs",
    "auto_size",
    "params",
    "models",
    "custom_nodes",
    "inputs",
    "repeat",
    "camera",
    "presets",
}
_PARAM_KEYS = {
    "type",
    "default",
    "min",
    "max",
    "multiple_of",
    "remainder",
    "min_length",
    "max_length",
    "choices",
}


class WorkflowError(ConfigError):
    """A workflow folder is unusable; the message names the file, the key and the problem."""


class _Problem(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


def _require(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise _Problem(where, message)


def _str(data: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    _require(isinstance(value, str) and value.strip() != "", f"{where}{key}", "must be a non-empty string")
    return value


def load_workflow_dir(path: Path, source: str) -> Workflow:
    """Load and check one workflow folder; raises `WorkflowError` saying what is wrong."""
    manifest_path = path / MANIFEST
    try:
        manifest_bytes = manifest_path.read_bytes()
    except OSError as exc:
        raise WorkflowError(f"workflow {path}: cannot read {MANIFEST}: {exc.strerror or exc}") from None
    try:
        manifest = tomllib.loads(manifest_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"workflow {path}: {MANIFEST} is not valid TOML: {exc}") from None
    try:
        graph_name = manifest.get("graph", "graph.json")
        _require(
            isinstance(graph_name, str) and "/" not in graph_name and graph_name not in ("", ".", ".."),
            "graph",
            "must be a file name in the workflow folder",
        )
        graph = _read_graph(path / graph_name)
        return _build(path, source, manifest, graph, graph_name)
    except _Problem as exc:
        raise WorkflowError(f"workflow {path}: {MANIFEST}: {exc}") from None


def _read_graph(graph_path: Path) -> dict[str, Any]:
    where = graph_path.name
    try:
        graph = json.loads(graph_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _Problem(where, f"cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Problem(where, f"is not valid JSON: {exc}") from None
    _require(isinstance(graph, dict) and graph, where, "must be a non-empty JSON object of nodes")
    if "nodes" in graph and "links" in graph:
        raise _Problem(where, "is a UI-format workflow; export it with ComfyUI's 'Export (API)' instead")
    for node_id, node in graph.items():
        w = f"{where}: node {node_id!r}"
        _require(isinstance(node, dict), w, "must be an object")
        _require(isinstance(node.get("class_type"), str) and node["class_type"], w, "has no class_type")
        _require(isinstance(node.get("inputs"), dict), w, "has no inputs object")
        for input_name, value in node["inputs"].items():
            if isinstance(value, list):
                _require(
                    len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int,
                    f"{w} input {input_name!r}",
                    "links must be [node_id_string, output_index_int]",
                )
                _require(
                    value[0] in graph, f"{w} input {input_name!r}", f"links to missing node {value[0]!r}"
                )
    return graph


def _build(path: Path, source: str, manifest: dict, graph: dict, graph_name: str) -> Workflow:
    unknown = set(manifest) - _TOP_KEYS
    _require(not unknown, "", f"unknown keys {sorted(unknown)} (known: {sorted(_TOP_KEYS)})")
    name = _str(manifest, "name", "")
    _require(bool(_NAME_RE.match(name)), "name", "use letters, digits, '_', '-', '.' (max 100)")
    _require(name == path.name, "name", f"{name!r} must equal the folder name {path.name!r}")
    version = manifest.get("version")
    _require(isinstance(version, str | int | float) and str(version) != "", "version", "is required")
    description = manifest.get("description", "")
    _require(isinstance(description, str), "description", "must be a string")

    limits = _params(manifest.get("params", {}))
    inputs = _inputs(manifest.get("inputs", {}), graph, graph_name)
    extra_names = set(MEASURED_NAMES) if inputs.audio.taken else set()
    derived, trees = _derived(manifest.get("derived", {}), limits, extra_names)
    repeat = _repeat(manifest.get("repeat"), graph, derived, graph_name)
    unbound = {repeat.count} if repeat else set()
    camera = _camera(manifest.get("camera"))
    presets = _presets(manifest.get("presets", {}), limits)
    bindings = _bindings(manifest.get("bindings"), graph, limits, derived, graph_name, inputs, unbound)
    video, last_frame, progress = _outputs(manifest.get("outputs"), graph, graph_name)
    auto_area = _auto_size(manifest.get("auto_size"), limits)
    models = _models(manifest.get("models", []))
    custom_nodes = _custom_nodes(manifest.get("custom_nodes", []), graph, graph_name)

    canonical = json.dumps(
        {"graph": graph, "manifest": manifest}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return Workflow(
        name=name,
        version=str(version),
        description=description,
        path=path,
        graph_sha256=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        models=models,
        custom_nodes=custom_nodes,
        video_node=video,
        last_frame_node=last_frame,
        progress_nodes=progress,
        limits=limits,
        bindings=bindings,
        derived=derived,
        auto_area=auto_area,
        source=source,
        inputs=inputs,
        repeat=repeat,
        camera=camera,
        presets=presets,
        _graph=graph,
        _derived_trees=trees,
    )


def _params(section: Any) -> dict[str, ParamSpec]:
    _require(isinstance(section, dict), "params", "must be a table of [params.<field>]")
    specs: dict[str, ParamSpec] = {}
    for field_name, spec in section.items():
        where = f"params.{field_name}"
        _require(field_name in API_FIELDS, where, f"unknown request field (known: {', '.join(API_FIELDS)})")
        _require(isinstance(spec, dict), where, "must be a table")
        unknown = set(spec) - _PARAM_KEYS
        _require(not unknown, where, f"unknown keys {sorted(unknown)} (known: {sorted(_PARAM_KEYS)})")
        declared = spec.get("type", API_FIELDS[field_name])
        _require(
            declared == API_FIELDS[field_name],
            f"{where}.type",
            f"the API's {field_name} is {API_FIELDS[field_name]!r}, not {declared!r}",
        )
        kind = API_FIELDS[field_name]
        numeric = {"min", "max", "multiple_of", "remainder"} & set(spec)
        lengths = {"min_length", "max_length"} & set(spec)
        if kind == "string":
            _require(not numeric, where, f"{sorted(numeric)} do not apply to a string")
        else:
            _require(not lengths, where, f"{sorted(lengths)} apply only to strings")
        for key in ("min", "max"):
            if key in spec:
                ok = isinstance(spec[key], int | float) and not isinstance(spec[key], bool)
                _require(ok, f"{where}.{key}", "must be a number")
        for key in ("multiple_of", "remainder", "min_length", "max_length"):
            if key in spec:
                ok = type(spec[key]) is int and spec[key] >= (1 if key == "multiple_of" else 0)
                _require(
                    ok,
                    f"{where}.{key}",
                    "must be a non-negative integer" + (" >= 1" if key == "multiple_of" else ""),
                )
        if "multiple_of" in spec or "remainder" in spec:
            _require(kind == "int", where, "multiple_of/remainder apply only to int fields")
        if "min" in spec and "max" in spec:
            _require(spec["min"] <= spec["max"], where, f"min {spec['min']} is above max {spec['max']}")
        choices = spec.get("choices")
        if choices is not None:
            _require(
                kind == "string" and isinstance(choices, dict) and choices,
                f"{where}.choices",
                "must be a table of request value = graph value (strings only), "
                'e.g. {mp4 = "video/h264-mp4"}',
            )
        param = ParamSpec(
            name=field_name,
            type=kind,
            default=None,
            min=spec.get("min"),
            max=spec.get("max"),
            multiple_of=spec.get("multiple_of"),
            remainder=spec.get("remainder", 0),
            min_length=spec.get("min_length"),
            max_length=spec.get("max_length"),
            choices=dict(choices) if choices is not None else None,
        )
        if "default" in spec:
            try:
                default = param.coerce(spec["default"])
            except Exception as exc:  # ValidationError naming the field
                raise _Problem(f"{where}.default", f"{spec['default']!r} is invalid: {exc}") from None
            param = replace(param, default=default)
        specs[field_name] = param
    _require("prompt" in specs, "params.prompt", "is required (every workflow takes a prompt)")
    return specs


def _derived(
    section: Any, limits: dict[str, ParamSpec], extra_names: set[str] | None = None
) -> tuple[dict[str, str], dict]:
    _require(isinstance(section, dict), "derived", 'must be a table of name = "expression"')
    numeric = {n for n, s in limits.items() if s.type != "string"} | (extra_names or set())
    exprs: dict[str, str] = {}
    trees = {}
    for name, text in section.items():
        where = f"derived.{name}"
        _require(name not in API_FIELDS and name not in JOB_FIELDS, where, "shadows a request field")
        _require(name.isidentifier(), where, "must be an identifier")
        try:
            trees[name] = parse_expression(text, numeric | set(exprs))
        except ExpressionError as exc:
            raise _Problem(where, str(exc)) from None
        exprs[name] = text
    return exprs, trees


def _inputs(section: Any, graph: dict, graph_name: str) -> Inputs:
    """`[inputs]`: image / end_image / audio = "required" | "optional" | "none" (image defaults to required,
    the others to none), `max_audio_seconds`, and `[inputs.when_absent]` (per optional input, the
    [node_id, input_name] links to cut when it is not given)."""
    _require(isinstance(section, dict), "inputs", "must be a table")
    unknown = set(section) - set(INPUT_NAMES) - {"max_audio_seconds", "when_absent"}
    _require(not unknown, "inputs", f"unknown keys {sorted(unknown)}")
    absent = section.get("when_absent", {})
    _require(isinstance(absent, dict), "inputs.when_absent", "must be a table of input = [[node_id, input]]")
    specs: dict[str, InputSpec] = {}
    for name in INPUT_NAMES:
        mode = section.get(name, "required" if name == "image" else "none")
        _require(mode in MODES, f"inputs.{name}", f"must be one of {', '.join(MODES)} (got {mode!r})")
        cuts: list[tuple[str, str]] = []
        for i, target in enumerate(absent.get(name, [])):
            w = f"inputs.when_absent.{name}[{i}]"
            _require(
                isinstance(target, list) and len(target) == 2 and all(isinstance(t, str) for t in target),
                w,
                'must be ["node_id", "input_name"]',
            )
            node_id, input_name = target
            _require(node_id in graph, w, f"node {node_id!r} is not in {graph_name}")
            _require(
                isinstance(graph[node_id]["inputs"].get(input_name), list),
                w,
                f"input {input_name!r} of node {node_id!r} is not a link",
            )
            cuts.append((node_id, input_name))
        if cuts:
            _require(mode == "optional", f"inputs.when_absent.{name}", "applies only to an optional input")
        specs[name] = InputSpec(name, mode, tuple(cuts))
    unknown_absent = set(absent) - set(INPUT_NAMES)
    _require(not unknown_absent, "inputs.when_absent", f"unknown inputs {sorted(unknown_absent)}")
    seconds = section.get("max_audio_seconds")
    if seconds is not None:
        _require(
            isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0,
            "inputs.max_audio_seconds",
            "must be a positive number",
        )
        _require(specs["audio"].taken, "inputs.max_audio_seconds", "the workflow takes no audio")
    return Inputs(
        image=specs["image"],
        end_image=specs["end_image"],
        audio=specs["audio"],
        max_audio_seconds=float(seconds) if seconds is not None else None,
    )


def _bindings(
    section: Any,
    graph: dict,
    limits: dict[str, ParamSpec],
    derived: dict[str, str],
    graph_name: str,
    inputs: Inputs | None = None,
    unbound: set[str] | None = None,
) -> dict[str, list[Binding]]:
    inputs = inputs or Inputs()
    unbound = unbound or set()
    _require(
        isinstance(section, dict) and section, "bindings", "must be a table of field = [[node_id, input]]"
    )
    known = set(limits) | set(derived) | set(JOB_FIELDS)
    bindings: dict[str, list[Binding]] = {}
    seen: dict[Binding, str] = {}
    for field_name, targets in section.items():
        where = f"bindings.{field_name}"
        if field_name in API_FIELDS and field_name not in limits:
            raise _Problem(where, f"bound, but [params.{field_name}] declares no limits for it")
        _require(field_name in known, where, f"unknown field (known: {', '.join(sorted(known))})")
        _require(
            isinstance(targets, list) and targets, where, "must be a non-empty list of [node_id, input_name]"
        )
        out: list[Binding] = []
        for i, target in enumerate(targets):
            w = f"{where}[{i}]"
            _require(
                isinstance(target, list) and len(target) == 2 and all(isinstance(t, str) for t in target),
                w,
                'must be ["node_id", "input_name"] (node ids are strings)',
            )
            node_id, input_name = target
            _require(node_id in graph, w, f"node {node_id!r} is not in {graph_name}")
            node = graph[node_id]
            _require(
                input_name in node["inputs"],
                w,
                f"node {node_id!r} ({node['class_type']}) has no input {input_name!r}; "
                f"its inputs: {', '.join(node['inputs'])}",
            )
            _require(
                not isinstance(node["inputs"][input_name], list),
                w,
                f"input {input_name!r} of node {node_id!r} is a link; bind only literal inputs",
            )
            _require(
                (node_id, input_name) not in seen,
                w,
                f"[{node_id!r}, {input_name!r}] is already bound by {seen.get((node_id, input_name))}",
            )
            seen[(node_id, input_name)] = field_name
            out.append((node_id, input_name))
        bindings[field_name] = out
    _require("prompt" in bindings, "bindings.prompt", "is required")
    for spec in inputs.all:
        if spec.taken:
            _require(
                spec.name in bindings,
                f"bindings.{spec.name}",
                f"is required ([inputs] {spec.name} = {spec.mode!r})",
            )
        else:
            _require(
                spec.name not in bindings,
                f"bindings.{spec.name}",
                f"is bound, but [inputs] {spec.name} is 'none'; declare it required or optional",
            )
    for field_name in list(limits) + [d for d in derived if d not in unbound]:
        _require(
            field_name in bindings,
            f"bindings.{field_name}",
            "is missing: the field is declared but sets nothing in the graph",
        )
    return bindings


def _camera(section: Any) -> CameraSpec:
    """`[camera]`: `moves` the workflow can do (default: all 14), `[camera.poses]` move = the pose value
    bound to `camera_pose`, `[camera.phrases]` overrides of the built-in prompt phrasing."""
    if section is None:
        return CameraSpec()
    _require(isinstance(section, dict), "camera", "must be a table")
    unknown = set(section) - {"moves", "poses", "phrases"}
    _require(not unknown, "camera", f"unknown keys {sorted(unknown)}")
    moves = section.get("moves", list(CAMERA_MOVES))
    _require(
        isinstance(moves, list) and all(m in CAMERA_MOVES for m in moves) and len(set(moves)) == len(moves),
        "camera.moves",
        f"must be a list of distinct moves out of {', '.join(CAMERA_MOVES)}",
    )
    poses = section.get("poses", {})
    phrases = section.get("phrases", {})
    for key, table in (("poses", poses), ("phrases", phrases)):
        _require(
            isinstance(table, dict) and all(isinstance(v, str) and v for v in table.values()),
            f"camera.{key}",
            "must be a table of move = string",
        )
        for move in table:
            _require(move in moves, f"camera.{key}.{move}", "is not one of camera.moves")
    return CameraSpec(moves=tuple(moves), poses=dict(poses), phrases={**CAMERA_PHRASES, **phrases})


def _presets(section: Any, limits: dict[str, ParamSpec]) -> dict[str, PresetSpec]:
    """`[presets.<draft|standard|high|ultra>]`: request-field values, `workflow` (run that workflow
    instead), `aesthetic` (terms enhance_prompt adds)."""
    _require(isinstance(section, dict), "presets", "must be a table of [presets.<name>]")
    out: dict[str, PresetSpec] = {}
    for name, table in section.items():
        where = f"presets.{name}"
        _require(name in QUALITY_PRESETS, where, f"unknown preset (known: {', '.join(QUALITY_PRESETS)})")
        _require(isinstance(table, dict), where, "must be a table")
        workflow = table.get("workflow")
        _require(
            workflow is None or (isinstance(workflow, str) and workflow),
            f"{where}.workflow",
            "must be a workflow name",
        )
        aesthetic = table.get("aesthetic", [])
        _require(
            isinstance(aesthetic, list) and all(isinstance(a, str) and a for a in aesthetic),
            f"{where}.aesthetic",
            "must be a list of strings",
        )
        values = {k: v for k, v in table.items() if k not in ("workflow", "aesthetic")}
        for key, value in values.items():
            _require(
                key in API_FIELDS and key != "prompt",
                f"{where}.{key}",
                "is not a request field a preset can set",
            )
            if workflow is None:  # values for this workflow: checked now (another workflow: at request time)
                _require(key in limits, f"{where}.{key}", "is not a field of this workflow")
                try:
                    limits[key].coerce(value)
                except Exception as exc:
                    raise _Problem(f"{where}.{key}", f"{value!r} is invalid: {exc}") from None
        out[name] = PresetSpec(name=name, values=values, workflow=workflow, aesthetic=tuple(aesthetic))
    return out


def _repeat(section: Any, graph: dict, derived: dict[str, str], graph_name: str) -> Repeat | None:
    """`[repeat]`: a block of nodes (`nodes`) repeated `count` times (a [derived] name), each copy fed by
    the previous copy's `output` on its `chain` inputs; consumers of `output` outside the block read the
    last copy. count 0 removes the block (its chain inputs' source feeds the consumers)."""
    if section is None:
        return None
    _require(isinstance(section, dict), "repeat", "must be a table")
    unknown = set(section) - {"nodes", "output", "chain", "count", "max"}
    _require(not unknown, "repeat", f"unknown keys {sorted(unknown)}")
    nodes = section.get("nodes")
    _require(
        isinstance(nodes, list) and nodes and all(isinstance(n, str) and n in graph for n in nodes),
        "repeat.nodes",
        f"must be a list of node ids in {graph_name}",
    )
    output = section.get("output")
    _require(
        isinstance(output, list) and len(output) == 2 and output[0] in nodes and type(output[1]) is int,
        "repeat.output",
        '["node_id", slot] of a node in repeat.nodes',
    )
    chain = section.get("chain")
    _require(isinstance(chain, list) and chain, "repeat.chain", "must be a list of [node_id, input_name]")
    sources = set()
    for i, target in enumerate(chain):
        w = f"repeat.chain[{i}]"
        _require(
            isinstance(target, list) and len(target) == 2 and target[0] in nodes,
            w,
            "must be [node_id in repeat.nodes, input_name]",
        )
        value = graph[target[0]]["inputs"].get(target[1])
        _require(isinstance(value, list), w, f"input {target[1]!r} of node {target[0]!r} is not a link")
        _require(
            value[0] not in nodes, w, "must link to a node outside the block (what feeds the first copy)"
        )
        sources.add((value[0], value[1]))
    _require(len(sources) == 1, "repeat.chain", "every chain input must link to the same output")
    count = section.get("count")
    _require(isinstance(count, str) and count in derived, "repeat.count", "must name a [derived] value")
    most = section.get("max", 64)
    _require(type(most) is int and most >= 1, "repeat.max", "must be a positive integer")
    return Repeat(
        nodes=tuple(nodes),
        output=(output[0], output[1]),
        chain=tuple((c[0], c[1]) for c in chain),
        source=next(iter(sources)),
        count=count,
        max=most,
    )


def _outputs(section: Any, graph: dict, graph_name: str) -> tuple[str, str | None, list[str]]:
    _require(isinstance(section, dict), "outputs", 'must be a table with video = "<node id>"')
    video = section.get("video")
    _require(isinstance(video, str) and video in graph, "outputs.video", f"must be a node id in {graph_name}")
    last_frame = section.get("last_frame")
    if last_frame is not None:
        _require(
            isinstance(last_frame, str) and last_frame in graph,
            "outputs.last_frame",
            f"must be a node id in {graph_name}",
        )
    progress = section.get("progress_nodes", [])
    _require(isinstance(progress, list), "outputs.progress_nodes", "must be a list of node ids")
    for i, node_id in enumerate(progress):
        _require(
            isinstance(node_id, str) and node_id in graph,
            f"outputs.progress_nodes[{i}]",
            f"{node_id!r} is not a node id in {graph_name}",
        )
    _require(len(set(progress)) == len(progress), "outputs.progress_nodes", "lists a node twice")
    unknown = set(section) - {"video", "last_frame", "progress_nodes"}
    _require(not unknown, "outputs", f"unknown keys {sorted(unknown)}")
    return video, last_frame, list(progress)


def _auto_size(section: Any, limits: dict[str, ParamSpec]) -> int | None:
    if section is None:
        return None
    _require(isinstance(section, dict), "auto_size", "must be a table with area = <pixels>")
    area = section.get("area")
    _require(type(area) is int and area > 0, "auto_size.area", "must be a positive integer (pixels)")
    _require(
        "width" in limits and "height" in limits, "auto_size", "needs [params.width] and [params.height]"
    )
    return area


def _models(section: Any) -> list[ModelFile]:
    _require(isinstance(section, list), "models", "must be an array of [[models]] tables")
    models: list[ModelFile] = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(section):
        where = f"models[{i}]"
        _require(isinstance(entry, dict), where, "must be a table")
        unknown = set(entry) - {"name", "folder", "url", "size", "sha256"}
        _require(not unknown, where, f"unknown keys {sorted(unknown)}")
        name = _str(entry, "name", f"{where}.")
        folder = _str(entry, "folder", f"{where}.")
        url = _str(entry, "url", f"{where}.")
        _require(
            "/" not in name and "\\" not in name and name not in (".", ".."),
            f"{where}.name",
            "must be a plain file name",
        )
        _require(
            all(p not in ("", ".", "..") for p in folder.split("/")),
            f"{where}.folder",
            'must be a folder under models/ (e.g. "loras")',
        )
        _require(url.startswith(("https://", "http://")), f"{where}.url", "must be an http(s) URL")
        size = entry.get("size")
        _require(
            size is None or (type(size) is int and size > 0), f"{where}.size", "must be a positive integer"
        )
        sha = entry.get("sha256")
        if sha is not None:
            _require(
                isinstance(sha, str) and bool(_SHA256_RE.match(sha.lower())),
                f"{where}.sha256",
                "must be 64 hex digits",
            )
            sha = sha.lower()
        _require((folder, name) not in seen, where, f"{folder}/{name} is listed twice")
        seen.add((folder, name))
        models.append(ModelFile(name=name, folder=folder, url=url, size=size, sha256=sha))
    return models


def _custom_nodes(section: Any, graph: dict, graph_name: str) -> list[CustomNode]:
    _require(isinstance(section, list), "custom_nodes", "must be an array of [[custom_nodes]] tables")
    used = {node["class_type"] for node in graph.values()}
    nodes: list[CustomNode] = []
    for i, entry in enumerate(section):
        where = f"custom_nodes[{i}]"
        _require(isinstance(entry, dict), where, "must be a table")
        unknown = set(entry) - {"name", "git_url", "commit", "node_types"}
        _require(not unknown, where, f"unknown keys {sorted(unknown)}")
        name = _str(entry, "name", f"{where}.")
        _require(bool(_NAME_RE.match(name)), f"{where}.name", "must be a directory name under custom_nodes/")
        git_url = _str(entry, "git_url", f"{where}.")
        _require(
            git_url.startswith(("https://", "http://", "git@", "file://")),
            f"{where}.git_url",
            "must be a git URL",
        )
        commit = _str(entry, "commit", f"{where}.")
        _require(
            bool(_COMMIT_RE.match(commit)), f"{where}.commit", "must be a commit hash (7-40 lowercase hex)"
        )
        types = entry.get("node_types", [])
        _require(
            isinstance(types, list) and all(isinstance(t, str) and t for t in types),
            f"{where}.node_types",
            "must be a list of node type names",
        )
        for t in types:
            _require(t in used, f"{where}.node_types", f"{t!r} is not used by {graph_name}")
        nodes.append(CustomNode(name=name, git_url=git_url, commit=commit, node_types=list(types)))
    _require(len({n.name for n in nodes}) == len(nodes), "custom_nodes", "a pack is listed twice")
    return nodes
