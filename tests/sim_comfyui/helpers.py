"""Helpers for the emulator tests: a ComfyUI dir shaped like the capture's, sample access, WS reading."""

from __future__ import annotations

import asyncio
import io
import json
import struct
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"
SAMPLES = FIXTURES / "samples"

GGUF_HIGH = "Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"
GGUF_LOW = "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf"
CLIP = "nsfw_wan_umt5-xxl_fp8_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
LORA_HIGH = "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"
LORA_LOW = "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"
MODELS = [
    ("unet", GGUF_HIGH),
    ("unet", GGUF_LOW),
    ("text_encoders", CLIP),
    ("vae", VAE),
    ("loras", LORA_HIGH),
    ("loras", LORA_LOW),
]
CUSTOM_NODES = ("ComfyUI-GGUF", "comfyui-videohelpersuite")


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def object_info() -> dict[str, Any]:
    return json.loads((FIXTURES / "object_info_wan.json").read_text())


def wan_graph() -> dict[str, Any]:
    return json.loads((FIXTURES / "wan22_i2v_gguf_api.json").read_text())


def gguf_bytes() -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 0)


def safetensors_bytes() -> bytes:
    header = b'{"__metadata__":{"format":"pt"}}'
    return struct.pack("<Q", len(header)) + header


def write_model(root: Path, folder: str, name: str, data: bytes | None = None) -> Path:
    path = root / "models" / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = gguf_bytes() if name.endswith(".gguf") else safetensors_bytes()
    path.write_bytes(data)
    return path


def png_bytes(size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_comfy_dir(root: Path, *, custom_nodes: tuple[str, ...] = CUSTOM_NODES, models: bool = True) -> Path:
    """The capture's install: GGUF + VHS (+ the stock websocket_image_save.py), the Wan model files
    with valid headers, and input/example.png."""
    for sub in ("input", "output", "temp", "custom_nodes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in custom_nodes:
        (root / "custom_nodes" / name).mkdir(exist_ok=True)
        (root / "custom_nodes" / name / "__init__.py").write_text("")
    (root / "custom_nodes" / "websocket_image_save.py").write_text("")
    if models:
        for folder, name in MODELS:
            write_model(root, folder, name)
    (root / "input" / "example.png").write_bytes(png_bytes((48, 32), (30, 90, 200)))
    return root


async def upload(
    session: aiohttp.ClientSession, url: str, filename: str | None, data: bytes | None, **fields: str
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    if filename is not None and data is not None:
        form.add_field("image", data, filename=filename, content_type="image/png")
    async with session.post(f"{url}/upload/image", data=form) as resp:
        await resp.read()
        return resp


async def read_until_done(
    ws: aiohttp.ClientWebSocketResponse, prompt_id: str | None = None, limit_s: float = 10.0
) -> list[dict[str, Any]]:
    """Text messages (and binary frames as {"binary": bytes}) up to `executing {node: null}`."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(limit_s):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                out.append({"binary": msg.data})
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                out.append({"closed": msg.type})
                return out
            data = json.loads(msg.data)
            out.append(data)
            if (
                data["type"] == "executing"
                and data["data"].get("node") is None
                and (prompt_id is None or data["data"].get("prompt_id") == prompt_id)
            ):
                return out


async def read_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Everything a socket receives within `seconds` (for observers that never see a done marker)."""
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    out.append(json.loads(msg.data))
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    out.append({"binary": msg.data})
                else:
                    out.append({"closed": msg.type})
                    return out
    except TimeoutError:
        pass
    return out


def shape(messages: list[dict[str, Any]]) -> list[tuple]:
    """A message sequence reduced to what must match the capture: type, node, progress state."""
    out: list[tuple] = []
    for m in messages:
        if "binary" in m:
            out.append(("binary", struct.unpack(">I", m["binary"][:4])[0]))
            continue
        t, d = m["type"], m["data"]
        if t in ("executing", "executed"):
            out.append((t, d.get("node")))
        elif t == "progress":
            out.append((t, d["node"], d["value"], d["max"]))
        elif t == "progress_state":
            out.append((t, tuple((k, v["value"], v["max"], v["state"]) for k, v in d["nodes"].items())))
        elif t == "status":
            out.append((t, d["status"]["exec_info"]["queue_remaining"]))
        elif t == "execution_cached":
            out.append((t, tuple(d["nodes"])))
        else:
            out.append((t,))
    return out


def captured(ws_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sample's WS log in the same form `read_until_done` returns."""
    out = []
    for m in ws_messages:
        if m["kind"] == "text":
            out.append(m["msg"])
        else:
            head = struct.pack(">I", m["event_type"])
            out.append({"binary": head})
    return out


def type_tree(value: Any) -> Any:
    """JSON value -> the same structure with leaves replaced by their type name (dict keys kept)."""
    if isinstance(value, dict):
        return {k: type_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [type_tree(v) for v in value]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def gradient_png() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((96, 64)).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


async def wan_prompt(emu, http, *, width=64, height=48, length=9, steps=4, fps=16, prefix="video/Wan2.2_i2v"):
    await upload(http, emu.url, "wan22_i2v_start.png", gradient_png(), overwrite="true")
    graph = wan_graph()
    graph["98"]["inputs"].update(width=width, height=height, length=length)
    graph["86"]["inputs"].update(steps=steps, end_at_step=steps // 2)
    graph["85"]["inputs"].update(steps=steps, start_at_step=steps // 2, end_at_step=steps)
    graph["108"]["inputs"].update(frame_rate=fps, filename_prefix=prefix)
    return graph
