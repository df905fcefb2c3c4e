"""End to end on instances that boot like Vast's ComfyUI image (`app.sim.image`), with default settings.

A fresh instance produces the README's video (examples/lighthouse.png, the default 81 frames), also when
the image copies ComfyUI into /workspace long after SSH answers; an instance whose ComfyUI never starts is
found out within COMFY_START_TIMEOUT_S, destroyed, and the job finishes on another machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import b64, sim_api

# SQLite only (the data dir's default database), to keep the suite's time; the database matters only to
# the instance marked bad, which runs on both.

LIGHTHOUSE = Path(__file__).resolve().parents[2] / "examples" / "lighthouse.png"


def readme_request() -> dict[str, Any]:
    return {"image_base64": b64(LIGHTHOUSE.read_bytes()), "prompt": "waves crash against the lighthouse"}


async def _readme_video(sim, tmp_path: Path) -> dict[str, Any]:
    job = await sim.submit(readme_request())
    job = await sim.finished(job["job_id"], within_s=120)
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["num_frames"] == 81
    video = await sim.client.get(job["result"]["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    return job


async def test_boot_race_fresh_image_instance_makes_the_readme_video(tmp_path):
    # the product's defaults for the instance (warm-up on, the simulated model load as by default)
    async with sim_api(tmp_path / "data", comfy_warmup=True, sim_model_load_s=1.0) as sim:
        job = await _readme_video(sim, tmp_path)
        box = sim.world.backend.boxes[int(job["result"]["instance_id"])]
        assert box.image.synced is True  # the image's own copy of ComfyUI, never skipped
        assert box.image.program.skips == 0  # PORTAL_CONFIG named ComfyUI (tunnel mode, the default)
        assert "-p 8188:8188" not in sim.emulator.instances[int(job["result"]["instance_id"])].body["env"]


async def test_boot_race_workspace_copy_long_after_ssh_still_makes_the_video(tmp_path):
    async with sim_api(tmp_path / "data", sim_workspace_sync_delay_s=4.0) as sim:
        job = await _readme_video(sim, tmp_path)
        box = sim.world.backend.boxes[int(job["result"]["instance_id"])]
        assert box.image.synced is True
        assert sim.instances_ever_created() == 1


@pytest.mark.usefixtures("database")
async def test_comfy_never_starts_instance_replaced_and_job_retried_elsewhere(tmp_path):
    async with sim_api(tmp_path / "data", comfy_start_timeout_s=2.0) as sim:
        backend = sim.world.backend
        boot = backend.boot
        broken: list[int] = []

        async def boot_first_without_portal(instance_id, body, keys):
            if not broken:  # today's bug: the image skips ComfyUI for ever
                broken.append(instance_id)
                body = {**body, "env": {k: v for k, v in body["env"].items() if k != "PORTAL_CONFIG"}}
            return await boot(instance_id, body, keys)

        backend.boot = boot_first_without_portal
        job = await sim.submit({**readme_request(), "num_frames": 9, "width": 256, "height": 256})
        job = await sim.finished(job["job_id"], within_s=120)
        assert job["state"] == "succeeded", job["error"]
        assert sim.instances_ever_created() == 2
        first = sim.emulator.destroyed[broken[0]]  # destroyed, not left billing
        second = sim.emulator.instances[int(job["result"]["instance_id"])]
        assert first.offer["machine_id"] != second.offer["machine_id"]  # another machine
        row = await sim.services.ledger.get(str(broken[0]))
        assert row is not None and row.meta.get("machine_fault")
        assert "did not answer" in row.meta.get("failure", "") and "Skipping ComfyUI" in row.meta["failure"]


@pytest.mark.parametrize("warmup", [True, False])
async def test_warmup_first_job_pays_no_model_load(tmp_path, warmup: bool):
    load_s = 3.0
    async with sim_api(tmp_path / "data", comfy_warmup=warmup, sim_model_load_s=load_s) as sim:
        job = await sim.submit({**readme_request(), "num_frames": 9, "width": 256, "height": 256})
        job = await sim.finished(job["job_id"], within_s=120)
        assert job["state"] == "succeeded", job["error"]
        timings = job["result"]["timings"]
        r = await sim.client.get(f"/instances/{job['result']['instance_id']}")
        meta = r.json()["meta"]
        assert meta["ttff_s"] > 0 and meta["first_job_gpu_s"] == timings["gpu_s"]
        if warmup:
            assert timings["gpu_s"] < load_s  # the models were already loaded
            assert meta["warmup_s"] >= load_s and "wan22_i2v_lightx2v_gguf" in meta["warmup"]
            assert timings["provision_share_s"] < meta["ttff_s"] - meta["warmup_s"]  # not charged to the job
        else:
            assert timings["gpu_s"] >= load_s
            assert "warmup_s" not in meta
