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


def _image(path: Path, width: int, height: int) -> None:
    img = Image.new("RGB", (width, height), (96, 96, 96))
    img.save(path, "PNG")


async def warm_up(client: ComfyClient, workflow: Any, *, deadline: float) -> float:
    """Run the workflow's graph once at its smallest size; returns the seconds it took."""
    raw = warmup_request(workflow)
    width, height = int(raw.get("width", 256)), int(raw.get("height", 256))
    params = workflow.validate(raw, (width, height))
    if not params.seed_resolved:
        params = params.with_resolved_seed()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="comfyfleet-warmup-") as tmp:
        path = Path(tmp) / f"warmup-{uuid.uuid4().hex[:8]}.png"
        await asyncio.to_thread(_image, path, width, height)
        name = await client.upload_image(path)
    graph = workflow.render(params, name, f"comfyfleet/warmup-{uuid.uuid4().hex[:8]}")
    nodes = list(getattr(workflow, "progress_nodes", None) or [])
    await client.run(graph, deadline=deadline, progress_nodes=nodes)
    seconds = time.monotonic() - t0
    log.info("warm-up of %s took %.2f s", getattr(workflow, "name", "?"), seconds)
    return seconds
