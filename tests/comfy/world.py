"""A provisioned ComfyUI directory for the emulator: Wan custom nodes, model files with sane headers,
a start image. Shared by the tests and bench/comfy_client.py."""

from __future__ import annotations

import copy
import json
import struct
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"
WAN_MODELS = [
    ("unet", "Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"),
    ("unet", "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf"),
    ("text_encoders", "nsfw_wan_umt5-xxl_fp8_scaled.safetensors"),
    ("vae", "wan_2.1_vae.safetensors"),
    ("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"),
    ("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"),
]
WAN_CUSTOM_NODES = ("ComfyUI-GGUF", "comfyui-videohelpersuite")
SAMPLERS = ["86", "85"]
VIDEO_NODE = "108"


def object_info() -> dict[str, Any]:
    return json.loads((FIXTURES / "object_info_wan.json").read_text())


def make_wan_comfy_dir(root: Path) -> Path:
    for sub in ("input", "output", "temp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in WAN_CUSTOM_NODES:
        (root / "custom_nodes" / name).mkdir(parents=True, exist_ok=True)
        (root / "custom_nodes" / name / "__init__.py").write_text("")
    for folder, name in WAN_MODELS:
        path = root / "models" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".gguf"):
            path.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 56)
        else:
            header = b'{"__metadata__":{}}'
            path.write_bytes(struct.pack("<Q", len(header)) + header)
    return root


def make_start_image(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 60, 30)).save(path)
    return path


def wan_graph(
    image_name: str,
    *,
    width: int = 64,
    height: int = 64,
    frames: int = 9,
    steps: int = 4,
    prefix: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The shipped-shape Wan graph, small and unique (seed + prefix) so no job is served from cache."""
    graph = copy.deepcopy(json.loads((FIXTURES / "wan22_i2v_gguf_api.json").read_text()))
    graph["97"]["inputs"]["image"] = image_name
    graph["98"]["inputs"].update(width=width, height=height, length=frames)
    split = steps // 2
    graph["86"]["inputs"].update(
        steps=steps,
        start_at_step=0,
        end_at_step=split,
        noise_seed=seed if seed is not None else uuid.uuid4().int % 2**48,
    )
    graph["85"]["inputs"].update(steps=steps, start_at_step=split, end_at_step=steps)
    graph[VIDEO_NODE]["inputs"]["filename_prefix"] = prefix or f"test/{uuid.uuid4().hex[:8]}"
    return graph
