"""Model loaders: open the file the way the real loader would and fail the way it does.

Only the header is read (GGUF magic; safetensors' 8-byte length + JSON), so placeholder files with a
valid header "load" instantly while a truncated or HTML-error-page download fails with the exact
exception ComfyUI reports (see ws_execution_errors_loaders.json).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from app.sim.comfyui.nodes_base import NodeFailure

_EXEC_TB = [
    '  File "/opt/ComfyUI/execution.py", line 496, in execute\n',
    '  File "/opt/ComfyUI/execution.py", line 315, in get_output_data\n',
    '  File "/opt/ComfyUI/execution.py", line 289, in _async_map_node_over_list\n',
    '  File "/opt/ComfyUI/execution.py", line 277, in process_inputs\n',
]
_TORCH_TB = [
    '  File "/opt/ComfyUI/comfy/utils.py", line 75, in load_torch_file\n',
    '  File "/opt/ComfyUI/comfy/utils.py", line 59, in load_torch_file\n',
]
_CALLER_TB: dict[str, list[str]] = {
    "VAELoader": ['  File "/opt/ComfyUI/nodes.py", line 783, in load_vae\n'],
    "CLIPLoader": [
        '  File "/opt/ComfyUI/nodes.py", line 952, in load_clip\n',
        '  File "/opt/ComfyUI/comfy/sd.py", line 900, in load_clip\n',
    ],
    "LoraLoaderModelOnly": ['  File "/opt/ComfyUI/nodes.py", line 700, in load_lora_model_only\n'],
    "LoraLoader": ['  File "/opt/ComfyUI/nodes.py", line 683, in load_lora\n'],
    "UNETLoader": ['  File "/opt/ComfyUI/nodes.py", line 935, in load_unet\n'],
}
_GGUF_TB = [
    '  File "/opt/ComfyUI/custom_nodes/ComfyUI-GGUF/nodes.py", line 168, in load_unet\n',
    '  File "/opt/ComfyUI/custom_nodes/ComfyUI-GGUF/loader.py", line 55, in gguf_sd_loader\n',
    '  File "/opt/venv/lib/python3.11/site-packages/gguf/gguf_reader.py", line 138, in __init__\n',
]
SAFETENSORS_ERROR = "safetensors._safetensors_rust.SafetensorError"
MAX_HEADER = 100_000_000


def generic_traceback() -> list[str]:
    return list(_EXEC_TB)


def check_gguf(path: Path) -> None:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise NodeFailure("ValueError", "GGUF magic invalid\n", _EXEC_TB + _GGUF_TB)


def check_safetensors(path: Path, class_type: str) -> None:
    tb = _EXEC_TB + _CALLER_TB.get(class_type, []) + _TORCH_TB
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise NodeFailure(SAFETENSORS_ERROR, "Error while deserializing header: header too small\n", tb)
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or length > size - 8:
            raise NodeFailure(SAFETENSORS_ERROR, "Error while deserializing header: header too large\n", tb)
        raw = fh.read(length)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise NodeFailure(
            SAFETENSORS_ERROR, f"Error while deserializing header: invalid JSON in header: {exc}\n", tb
        ) from exc


def check_model_file(path: Path | None, folder: str, name: str, class_type: str) -> Path:
    """Raise the loader's real exception unless the file is there and its header is sane."""
    if path is None or not path.is_file():
        raise NodeFailure(
            "FileNotFoundError",
            f"Model in folder '{folder}' with filename '{name}' not found.\n",
            _EXEC_TB + _CALLER_TB.get(class_type, []),
        )
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        check_gguf(path)
    elif suffix in (".safetensors", ".sft"):
        check_safetensors(path, class_type)
    return path
