"""PORTAL_CONFIG: Vast's ComfyUI image starts ComfyUI only when the portal config names it, in every access
mode (`exit_portal.sh`); without a `-p 8188:8188` mapping Caddy publishes nothing, so tunnel stays closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncssh
import pytest

from app.config import Settings
from app.sim.image.supervisor import portal_names_comfyui
from app.sim.world import SimInstanceBackend
from app.vast.offers import ClipProfile, OfferRequirements, expected_cost_per_clip
from app.vast.provider import VastProvider

OFFER = {
    "id": 5,
    "machine_id": 9,
    "gpu_name": "RTX 4090",
    "dph_total": 0.4,
    "direct_port_count": 4,
    "inet_down": 500,
}
KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()


def _body(**settings) -> dict:
    provider = VastProvider(None, None, Settings(_env_file=None, deployment="prod", **settings))  # type: ignore[arg-type]
    ranked = expected_cost_per_clip(OFFER, OfferRequirements(), ClipProfile())
    return provider.create_body(ranked, "comfyfleet-prod-x", "tok", 41.0)


@pytest.mark.parametrize("access", ["tunnel", "direct"])
def test_portal_config_names_comfyui_in_every_mode(access: str):
    body = _body(comfy_access=access)
    assert portal_names_comfyui(body["env"].get("PORTAL_CONFIG"))
    assert ":18188:" in body["env"]["PORTAL_CONFIG"]  # Caddy's upstream is ComfyUI's internal port
    assert body["onstart"] == "entrypoint.sh"  # ssh runtypes replace the entrypoint: onstart starts services


def test_portal_config_tunnel_publishes_nothing():
    env = _body(comfy_access="tunnel")["env"]
    assert not any(k.startswith("-p ") for k in env)
    assert _body(comfy_access="direct")["env"]["-p 8188:8188"] == "1"


@pytest.mark.parametrize("access", ["tunnel", "direct"])
async def test_portal_config_default_body_starts_comfyui_on_the_image(tmp_path: Path, access: str):
    """The product's own create body, booted by the simulated image: ComfyUI comes up."""
    backend = SimInstanceBackend(tmp_path, internal_port=18188, step_delay_s=0.0, sync_delay_s=0.0)
    try:
        info = await backend.boot(1, _body(comfy_access=access), [KEY])
        box = backend.boxes[1]
        deadline = time.monotonic() + 15
        while box.comfy is None:
            assert time.monotonic() < deadline, box.image.program.last_exit
            await asyncio.sleep(0.02)
        assert box.image.program.skips == 0
        assert ("8188/tcp" in info.ports) == (access == "direct")
    finally:
        await backend.close()
