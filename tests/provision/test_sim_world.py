"""The simulated world end to end: the shipped Wan workflow provisioned over SSH into a sandbox, then seen
by the ComfyUI emulator after the machine's restart hook (models in loader combos, custom nodes loaded)."""

from __future__ import annotations

import dataclasses
import json

import asyncssh
import httpx

from app.config import get_settings
from app.pool.provider import SSHTarget
from app.provision import build_plan, connect, run_provision
from app.sim.comfyui import ComfyEmulator
from app.sim.modelserver import ModelServer, default_files, sim_node_sources
from app.sim.sshserver import SandboxSSHServer, install_restart_hook, sim_restart_command
from app.workflows import get_workflow


async def test_shipped_workflow_provisioned_into_a_simulated_instance(tmp_path, served_root, fixtures_dir):
    settings = get_settings()
    workflow = get_workflow(settings.default_workflow, settings)
    node_sources = sim_node_sources(tmp_path / "repos", [n.name for n in workflow.custom_nodes])
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "key"
    key.write_private_key(str(key_path))
    box = SandboxSSHServer(tmp_path / "instance", key.export_public_key("openssh").decode())
    comfy_dir = box.sandbox / "workspace/ComfyUI"
    object_info = json.loads((fixtures_dir / "comfyui/object_info_wan.json").read_text())
    emulator = ComfyEmulator(comfy_dir, object_info=object_info)
    mirror = ModelServer(served_root / "wan", default_files(scale=0.125))
    comfy_url = await emulator.start()
    await mirror.start()
    port = await box.start()
    try:
        install_restart_hook(comfy_dir, sim_restart_command(comfy_url))
        async with httpx.AsyncClient(base_url=comfy_url, timeout=10) as http:
            assert "UnetLoaderGGUF" not in (await http.get("/object_info")).json()

            plan = await build_plan(
                workflow,
                settings,
                mirror_url=mirror.url,
                node_sources=node_sources,
                comfy_dir=str(comfy_dir),
            )
            plan = dataclasses.replace(plan, min_free_bytes=0)
            target = SSHTarget("127.0.0.1", port, "root", box.host_key_line)
            async with await connect(target, key_path) as conn:
                summary = await run_provision(conn, plan)

            assert summary.restarted and len(summary.downloaded) == len(workflow.models)
            assert sorted(summary.nodes_installed) == sorted(node_sources)
            info = (await http.get("/object_info")).json()
            unets = info["UnetLoaderGGUF"]["input"]["required"]["unet_name"][0]
            assert sorted(unets) == sorted(m.name for m in workflow.models if m.folder == "unet")
            assert "VHS_VideoCombine" in info
    finally:
        await box.stop()
        await mirror.stop()
        await emulator.stop()
