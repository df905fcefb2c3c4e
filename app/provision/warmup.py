"""Warm-up: a ready instance is a warm instance.

After provisioning, the workflow's real graph runs once at the smallest size its manifest allows, so
ComfyUI loads the models (and compiles what it compiles on first use) before the first user's job
arrives. Its time is the instance's (`meta.warmup_s`), never charged to a job.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
import wave
from pathlib import Path
from typing import Any

from PIL import Image

from app.comfy import ComfyClient

log = logging.getLogger(__name__)

_SMALLEST = ("width", "height", "num_frames", "steps")
WARMUP_PROMPT = "warm-up"


def warmup_request(workflow: Any) -> dict[str, Any]:
    """The smallest request the workflow's limits allow (size, frames, steps), with a fixed seed."""
    raw: dict[str, Any] = {"prompt": WARMUP_PROMPT, "seed": 1}
    limits = getattr(workflow, "limits", {}) or {}
    for name in _SMALLEST:
        spec = limits.get(name)
        if spec is not None and spec.min is not None:
            raw[name] = spec.snap(spec.min)
    return {k: v for k, v in raw.items() if k in limits or k in ("prompt", "seed")}


WARMUP_AUDIO_S = 1.0  # S2V: one chunk's worth of silence is the smallest clip


def _image(path: Path, width: int, height: int) -> None:
    img = Image.new("RGB", (width, height), (96, 96, 96))
    img.save(path, "PNG")


def _silence(path: Path, seconds: float) -> None:
    """A mono 16 kHz WAV of silence (what the workflow's audio input needs to load and encode)."""
    rate = 16_000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(rate * seconds))


def _required_inputs(workflow: Any) -> list[str]:
    """The file inputs a request must give (image, end_image, audio), from the manifest's [inputs]."""
    inputs = getattr(workflow, "inputs", None)
    if inputs is None:  # a workflow object without declared inputs takes one image
        return ["image"]
    return [spec.name for spec in inputs.all if spec.required]


async def warm_up(client: ComfyClient, workflow: Any, *, deadline: float) -> float:
    """Run the workflow's graph once at its smallest size, with a stand-in for every required input (a
    grey image, a second of silence); returns the seconds it took."""
    raw = warmup_request(workflow)
    width, height = int(raw.get("width", 256)), int(raw.get("height", 256))
    params = workflow.validate(raw, (width, height))
    if not params.seed_resolved:
        params = params.with_resolved_seed()
    needed = _required_inputs(workflow)
    t0 = time.monotonic()
    names: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="comfyfleet-warmup-") as tmp:
        for name in needed:
            suffix = ".wav" if name == "audio" else ".png"
            path = Path(tmp) / f"warmup-{name}-{uuid.uuid4().hex[:8]}{suffix}"
            if name == "audio":
                await asyncio.to_thread(_silence, path, WARMUP_AUDIO_S)
            else:
                await asyncio.to_thread(_image, path, width, height)
            names[name] = await client.upload_image(path)
    extras: dict[str, Any] = {}
    if "end_image" in names:
        extras["end_image_name"] = names["end_image"]
    if "audio" in names:
        extras.update(audio_name=names["audio"], audio_seconds=WARMUP_AUDIO_S)
    graph = workflow.render(params, names.get("image"), f"comfyfleet/warmup-{uuid.uuid4().hex[:8]}", **extras)
    nodes = list(getattr(workflow, "progress_nodes", None) or [])
    await client.run(graph, deadline=deadline, progress_nodes=nodes)
    seconds = time.monotonic() - t0
    log.info("warm-up of %s took %.2f s", getattr(workflow, "name", "?"), seconds)
    return seconds
