"""What a client needs to build a request form for a workflow: `describe(workflow)`.

The answer of `GET /workflows` and `GET /workflows/{name}` (and what the web console builds its form from):
the workflow's name and description, its file inputs (each `{name, kind, required}`, kind `image` or
`audio`), its request parameters with their limits and defaults (the manifest's `[params.*]`), and the
optional choices a workflow may declare (camera moves, quality presets).

File inputs are the bound names a job fills with an uploaded file. Today a manifest binds one: `image`
(the start image, required). Other names follow the same table (`end_image`, `audio`), so a workflow that
binds them is described without changing this module; a manifest may also list its inputs explicitly
(`Workflow.inputs`, each `{name, kind, required}`), which then wins.
"""

from __future__ import annotations

from typing import Any

# Bound names that a job fills with an uploaded file, their kind, and whether a request must give one.
FILE_INPUTS: dict[str, tuple[str, bool]] = {
    "image": ("image", True),
    "start_image": ("image", True),
    "end_image": ("image", False),
    "audio": ("audio", False),
}

# Optional choice lists a workflow may carry (attribute name on the workflow -> key in the description).
CHOICES = {"camera_motions": "camera_motions", "quality_presets": "quality_presets"}


def _inputs(workflow: Any) -> list[dict[str, Any]]:
    declared = getattr(workflow, "inputs", None)
    if declared:
        out = []
        for item in declared:
            d = item if isinstance(item, dict) else getattr(item, "__dict__", {})
            name = str(d.get("name"))
            kind = d.get("kind") or FILE_INPUTS.get(name, ("image", False))[0]
            out.append({"name": name, "kind": kind, "required": bool(d.get("required", False))})
        return out
    bindings = getattr(workflow, "bindings", {}) or {}
    return [
        {"name": name, "kind": kind, "required": required}
        for name, (kind, required) in FILE_INPUTS.items()
        if name in bindings
    ]


def _choices(value: Any) -> list[dict[str, Any]]:
    """A choice list as `[{name, label?, ...}]`, whether declared as names or as tables."""
    if isinstance(value, dict):
        return [{"name": str(k), **(v if isinstance(v, dict) else {"value": v})} for k, v in value.items()]
    out = []
    for item in value or []:
        if isinstance(item, dict):
            out.append(dict(item))
        elif isinstance(item, str):
            out.append({"name": item})
        else:
            out.append({"name": str(getattr(item, "name", item))})
    return out


def describe(workflow: Any) -> dict[str, Any]:
    """Name, description, file inputs, parameters (limits + defaults) and optional choices of a workflow."""
    params = []
    for name, spec in workflow.limits.items():
        d = spec.to_dict()
        d["required"] = bool(spec.required) and name not in ("width", "height")  # sizes follow the image
        params.append(d)
    out: dict[str, Any] = {
        "name": workflow.name,
        "version": getattr(workflow, "version", None),
        "description": workflow.description,
        "inputs": _inputs(workflow),
        "params": params,
    }
    auto_area = getattr(workflow, "auto_area", None)
    if auto_area:
        out["auto_size_area"] = auto_area
    for attr, key in CHOICES.items():
        value = getattr(workflow, attr, None)
        if value:
            out[key] = _choices(value)
    return out


def describe_all(workflows: dict[str, Any]) -> list[dict[str, Any]]:
    return [describe(wf) for _, wf in sorted(workflows.items())]
