"""Widget values converted to their declared types, as ComfyUI's validation does in place
(so history shows `frame_rate: 16.0` for a posted `16`, and nodes receive the converted values)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

_CONVERT = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def declared_type(info: dict[str, Any], name: str) -> str | None:
    for section in ("required", "optional"):
        spec = info.get("input", {}).get(section, {}).get(name)
        if spec is not None:
            return spec[0] if isinstance(spec[0], str) else None
    return None


def convert_prompt(prompt: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(prompt)
    for node in out.values():
        if not isinstance(node, dict):
            continue
        info = object_info.get(node.get("class_type", ""))
        inputs = node.get("inputs")
        if info is None or not isinstance(inputs, dict):
            continue
        for name, value in inputs.items():
            if is_link(value):
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[name] = value["__value__"]
            kind = declared_type(info, name)
            if kind in _CONVERT:
                with contextlib.suppress(TypeError, ValueError):  # unconvertible: kept as sent
                    if kind == "INT" and isinstance(value, str):
                        inputs[name] = int(value) if value.lstrip("+-").isdigit() else int(float(value))
                    else:
                        inputs[name] = _CONVERT[kind](value)
    return out
