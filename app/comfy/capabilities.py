"""Check a ComfyUI's /object_info against what a workflow needs, before submitting anything.

ComfyUI has no "list installed nodes/models" endpoint that covers custom folders reliably (`/models/unet`
is a 404, `/models/diffusion_models` hides `.gguf`), but every loader lists the files it can load in the
combo of its file input. So a model is present when a loader for its folder offers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from app.comfy.errors import MissingModelError, MissingNodeError

# folder -> the (node type, input name) combos that list its files. Aliases as ComfyUI maps them.
LOADERS: dict[str, list[tuple[str, str]]] = {
    "diffusion_models": [
        ("UNETLoader", "unet_name"),
        ("UnetLoaderGGUF", "unet_name"),
        ("UnetLoaderGGUFAdvanced", "unet_name"),
    ],
    "text_encoders": [
        ("CLIPLoader", "clip_name"),
        ("DualCLIPLoader", "clip_name1"),
        ("DualCLIPLoader", "clip_name2"),
        ("CLIPLoaderGGUF", "clip_name"),
        ("DualCLIPLoaderGGUF", "clip_name1"),
        ("DualCLIPLoaderGGUF", "clip_name2"),
    ],
    "vae": [("VAELoader", "vae_name")],
    "loras": [("LoraLoaderModelOnly", "lora_name"), ("LoraLoader", "lora_name")],
    "checkpoints": [("CheckpointLoaderSimple", "ckpt_name")],
    "clip_vision": [("CLIPVisionLoader", "clip_name")],
    "upscale_models": [("UpscaleModelLoader", "model_name")],
}
_ALIASES = {
    "unet": "diffusion_models",
    "unet_gguf": "diffusion_models",
    "clip": "text_encoders",
    "clip_gguf": "text_encoders",
}


class ModelLike(Protocol):
    name: str
    folder: str


class CustomNodeLike(Protocol):
    name: str
    node_types: list[str]


def combo_values(spec: Any) -> list[str] | None:
    """The options of a combo input: legacy `[[...], {...}]` or V3 `["COMBO", {"options": [...]}]`."""
    if not isinstance(spec, list | tuple) or not spec:
        return None
    first = spec[0]
    if isinstance(first, list):
        return [str(v) for v in first]
    if first == "COMBO" and len(spec) > 1 and isinstance(spec[1], Mapping):
        return [str(v) for v in spec[1].get("options") or []]
    return None


def _input_spec(node_info: Mapping[str, Any], input_name: str) -> Any:
    inputs = node_info.get("input") or {}
    for section in ("required", "optional"):
        spec = (inputs.get(section) or {}).get(input_name)
        if spec is not None:
            return spec
    return None


def _all_combo_values(object_info: Mapping[str, Any]) -> set[str]:
    values: set[str] = set()
    for info in object_info.values():
        for section in ((info or {}).get("input") or {}).values():
            for spec in (section or {}).values() if isinstance(section, Mapping) else []:
                values.update(combo_values(spec) or [])
    return values


def available_models(object_info: Mapping[str, Any], folder: str) -> set[str] | None:
    """Files a loader of `folder` offers; None if no known loader of that folder is installed."""
    loaders = LOADERS.get(_ALIASES.get(folder, folder))
    if not loaders:
        return None
    found: set[str] | None = None
    for node_type, input_name in loaders:
        info = object_info.get(node_type)
        if not info:
            continue
        values = combo_values(_input_spec(info, input_name))
        if values is not None:
            found = (found or set()) | set(values)
    return found


def missing_node_types(object_info: Mapping[str, Any], node_types: Iterable[str]) -> list[str]:
    return sorted({t for t in node_types if t not in object_info})


def missing_models(object_info: Mapping[str, Any], models: Iterable[Any]) -> list[tuple[str, str]]:
    """(folder, name) of each model no loader offers. Names may carry a subdirectory (`wan/x.gguf`)."""
    missing: list[tuple[str, str]] = []
    anywhere: set[str] | None = None
    for m in models:
        name, folder = _model_name_folder(m)
        offered = available_models(object_info, folder)
        if offered is None:
            if anywhere is None:
                anywhere = _all_combo_values(object_info)
            offered = anywhere
        normalized = {v.replace("\\", "/") for v in offered}
        if name not in normalized:
            missing.append((folder, name))
    return missing


def _model_name_folder(m: Any) -> tuple[str, str]:
    if isinstance(m, tuple | list):
        a, b = m[0], m[1]
        return str(a), str(b)
    return str(m.name), str(m.folder)


def check_object_info(
    object_info: Mapping[str, Any],
    node_types: Iterable[str],
    models: Iterable[Any],
    custom_nodes: Iterable[Any] = (),
) -> None:
    """Raise MissingNodeError (first: a missing loader would also hide its models) or MissingModelError."""
    node_types = list(node_types)
    missing = missing_node_types(object_info, node_types)
    if missing:
        providers: dict[str, str] = {}
        for cn in custom_nodes:
            for t in getattr(cn, "node_types", []) or []:
                providers[str(t)] = str(cn.name)
        raise MissingNodeError(missing, providers)
    missing_files = missing_models(object_info, models)
    if missing_files:
        raise MissingModelError(missing_files)
