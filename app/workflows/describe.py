"""What a client needs to build a request form for a workflow: `describe(workflow)`.

The answer of `GET /workflows` and `GET /workflows/{name}` (and what the web console builds its form from):
the workflow's name and description, its file inputs (`{name, kind, required, fields}` from the manifest's
`[inputs]`), its request parameters with their limits and defaults (the manifest's `[params.*]`, as a list
and as one JSON Schema object), the camera moves it can do (and how: a pose or prompt phrasing) and its
quality presets. Everything comes from the manifest, so a new workflow needs no change here.
"""

from __future__ import annotations

from typing import Any

from app.workflows.inputs import API_INPUT_FIELDS, INPUT_KINDS
from app.workflows.model import Workflow
from app.workflows.params import ParamSpec

_JSON_TYPES = {"string": "string", "int": "integer", "float": "number"}


def param_schema(spec: ParamSpec) -> dict[str, Any]:
    """One request field as JSON Schema (draft 2020-12 keywords): type, default, limits, enum."""
    out: dict[str, Any] = {"type": _JSON_TYPES[spec.type]}
    if spec.default is not None:
        out["default"] = spec.default
    if spec.min is not None:
        out["minimum"] = spec.min
    if spec.max is not None:
        out["maximum"] = spec.max
    if spec.multiple_of and spec.multiple_of > 1 and not spec.remainder:
        out["multipleOf"] = spec.multiple_of
    elif spec.multiple_of and spec.multiple_of > 1:  # 4n+1 frames: JSON Schema has no keyword for it
        out["description"] = f"{spec.multiple_of}n+{spec.remainder}"
    if spec.min_length is not None:
        out["minLength"] = spec.min_length
    if spec.max_length is not None:
        out["maxLength"] = spec.max_length
    if spec.choices is not None:
        out["enum"] = list(spec.choices)
    return out


def describe(workflow: Workflow) -> dict[str, Any]:
    """Name, description, file inputs, parameters (limits + defaults, and as JSON Schema), camera moves and
    quality presets of a workflow."""
    params = []
    for name, spec in workflow.limits.items():
        d = spec.to_dict()
        if d.get("choices") is not None:
            d["choices"] = list(spec.choices or {})  # the request values; what they bind to stays inside
        d["required"] = spec.required and name not in ("width", "height")  # sizes follow the image
        params.append(d)
    required = [p["name"] for p in params if p["required"]]
    inputs = [
        {
            "name": s.name,
            "kind": INPUT_KINDS[s.name],
            "required": s.required,
            "fields": list(API_INPUT_FIELDS[s.name]),
        }
        for s in workflow.inputs.all
        if s.taken
    ]
    out: dict[str, Any] = {
        "name": workflow.name,
        "version": workflow.version,
        "description": workflow.description,
        "inputs": inputs,
        "params": params,
        "params_schema": {
            "type": "object",
            "properties": {name: param_schema(spec) for name, spec in workflow.limits.items()},
            "required": required,
        },
        "camera_motions": [
            {"name": move, "how": how, "value": value}
            for move in workflow.camera.moves
            for how, value in [workflow.camera.how(move)]
        ],
        "quality_presets": [{"name": name, **p.to_dict()} for name, p in workflow.presets.items()],
    }
    if workflow.inputs.max_audio_seconds is not None:
        out["max_audio_seconds"] = workflow.inputs.max_audio_seconds
    auto_area = getattr(workflow, "auto_area", None)
    if auto_area:
        out["auto_size_area"] = auto_area
    return out


def describe_all(workflows: dict[str, Workflow]) -> list[dict[str, Any]]:
    return [describe(wf) for _, wf in sorted(workflows.items())]
