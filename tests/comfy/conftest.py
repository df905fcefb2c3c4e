"""Fixtures: the ComfyUI emulator (R2) over a provisioned Wan directory, and a client tuned for tests."""

from __future__ import annotations

import pytest

from app.comfy import ComfyClient
from app.sim.comfyui import ComfyEmulator
from app.sim.comfyui.faults import ComfyFaults
from tests.comfy.world import make_start_image, make_wan_comfy_dir, object_info


@pytest.fixture
def comfy_dir(tmp_path):
    return make_wan_comfy_dir(tmp_path / "ComfyUI")


@pytest.fixture
def start_image(tmp_path):
    return make_start_image(tmp_path / "start.png")


@pytest.fixture
async def emulator(comfy_dir):
    """Factory: `emu = await emulator(step_delay_s=..., token=..., **fault_switches)`; stopped at teardown."""
    started: list[ComfyEmulator] = []

    async def start(*, step_delay_s: float = 0.0, token: str | None = None, **faults):
        emu = ComfyEmulator(
            comfy_dir,
            object_info=object_info(),
            step_delay_s=step_delay_s,
            token=token,
            faults=ComfyFaults(**faults),
        )
        await emu.start("127.0.0.1", 0)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        await emu.stop()


def make_client(url: str, **kwargs) -> ComfyClient:
    """Short intervals so fault tests take fractions of a second, not the production defaults."""
    opts = {
        "timeout": 5.0,
        "poll_interval_s": 0.2,
        "history_grace_s": 3.0,
        "unreachable_grace_s": 0.8,
        "lost_confirm_s": 0.3,
    }
    opts.update(kwargs)
    return ComfyClient(url, **opts)
