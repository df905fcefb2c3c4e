"""Fixtures: a capture-shaped ComfyUI directory, an emulator factory, an HTTP session."""

from __future__ import annotations

import aiohttp
import pytest

from app.sim.comfyui import ComfyEmulator, ComfyFaults
from tests.sim_comfyui.helpers import make_comfy_dir, object_info


@pytest.fixture
def comfy_dir(tmp_path):
    return make_comfy_dir(tmp_path / "ComfyUI")


@pytest.fixture
async def make_emu(comfy_dir):
    """`emu = await make_emu(step_delay_s=..., token=..., faults=ComfyFaults(...), info=...)`."""
    started: list[ComfyEmulator] = []

    async def start(
        *,
        step_delay_s: float = 0.0,
        token: str | None = None,
        faults: ComfyFaults | None = None,
        info: dict | None = None,
        directory=None,
        **kwargs,
    ) -> ComfyEmulator:
        emu = ComfyEmulator(
            directory or comfy_dir,
            object_info=info or object_info(),
            step_delay_s=step_delay_s,
            token=token,
            faults=faults,
            **kwargs,
        )
        await emu.start("127.0.0.1", 0)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        await emu.stop()


@pytest.fixture
async def emu(make_emu):
    return await make_emu()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session
