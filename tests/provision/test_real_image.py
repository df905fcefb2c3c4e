"""Provisioning an instance that boots like Vast's ComfyUI image (the simulated image, and a real sshd).

- boot race: SSH answers before the image copies ComfyUI into /workspace, and the copy is skipped when
  the folder already exists: provisioning must touch nothing before main.py is there and the image's
  marker is gone;
- torch pin: a custom node whose requirements name torch must not replace the image's CUDA torch, and its
  requirements go into ComfyUI's own venv.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import asyncssh
import httpx
import pytest

from app.config import Settings
from app.jobs.wiring import image_plan
from app.pool.provider import SSHTarget
from app.provision import Plan, PlannedNode, connect, run_provision
from app.provision.errors import ImageBootTimeout, NodeInstallFailed
from app.sim.image.layout import SIM_BOOT_MARKER, SIM_COMFY_DIR, SIM_COMFY_PYTHON, Layout
from app.sim.image.venv import build_index, installed_version, make_venv
from app.sim.world import SimInstanceBackend
from tests.support.gitrepos import make_node_repo
from tests.support.sshd import sshd, unavailable_reason  # noqa: F401

PORTAL = "localhost:8188:18188:/:ComfyUI"


def sim_settings(**kw) -> Settings:
    values = dict(comfy_python=SIM_COMFY_PYTHON, comfy_boot_marker=SIM_BOOT_MARKER, comfy_boot_timeout_s=60)
    values.update(kw)
    return Settings(_env_file=None, **values)


@pytest.fixture
def client_key(tmp_path: Path) -> tuple[Path, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / "id_ed25519"
    key.write_private_key(str(path))
    os.chmod(path, 0o600)
    return path, key.export_public_key("openssh").decode()


async def boot(tmp_path: Path, pub: str, *, sync_delay_s: float) -> tuple[SimInstanceBackend, SSHTarget]:
    backend = SimInstanceBackend(
        tmp_path / "inst", internal_port=18188, step_delay_s=0.0, sync_delay_s=sync_delay_s
    )
    body = {"image": "vastai/comfyui:test", "onstart": "entrypoint.sh", "env": {"PORTAL_CONFIG": PORTAL}}
    info = await backend.boot(1, body, [pub])
    return backend, SSHTarget(info.ssh_host, info.ssh_port)


def plan_for(nodes: list[PlannedNode]) -> Plan:
    return Plan(workflow="t", models=[], nodes=nodes, comfy_dir=SIM_COMFY_DIR, min_free_bytes=0)


async def comfy_answers(backend: SimInstanceBackend) -> bool:
    box = backend.boxes[1]
    if box.comfy is None:
        return False
    try:
        async with httpx.AsyncClient(timeout=2) as c:
            return (await c.get(box.comfy.url + "/system_stats")).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_comfy(backend: SimInstanceBackend, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while not await comfy_answers(backend):
        assert time.monotonic() < deadline, backend.boxes[1].image.program.last_exit
        await asyncio.sleep(0.05)


async def test_boot_race_provisioning_waits_for_the_workspace_copy(tmp_path: Path, client_key):
    """The copy happens well after SSH answers: provisioning waits, the copy still happens, ComfyUI runs."""
    key_path, pub = client_key
    backend, target = await boot(tmp_path, pub, sync_delay_s=2.0)
    try:
        layout = Layout(backend.boxes[1].sandbox)
        conn = await connect(target, key_path)
        async with conn:
            events: list[dict] = []
            summary = await run_provision(
                conn, image_plan(plan_for([]), sim_settings()), events.append, remote_dir=".cf", timeout_s=60
            )
        assert summary.ok
        kinds = [e["event"] for e in events]
        assert "boot_wait" in kinds and "boot_done" in kinds
        assert backend.boxes[1].image.synced is True  # the image's copy was not skipped
        assert (layout.comfy_dir / "main.py").is_file() and (layout.comfy_dir / "models").is_dir()
        await wait_comfy(backend)
    finally:
        await backend.close()


async def test_boot_race_plan_asks_the_script_to_wait():
    text = image_plan(plan_for([]), sim_settings(comfy_boot_timeout_s=90)).to_text()
    assert "set\tboot_wait\t90\n" in text and f"set\tboot_marker\t{SIM_BOOT_MARKER}\n" in text
    assert "boot_wait" not in plan_for([]).to_text()  # a user's own box (static endpoints) does not wait
    default = image_plan(plan_for([]), Settings(_env_file=None))
    assert default.python == "/venv/main/bin/python" and default.boot_marker == "/.provisioning"


async def test_boot_race_image_that_never_finishes_is_a_typed_error(tmp_path: Path, client_key):
    key_path, pub = client_key
    backend, target = await boot(tmp_path, pub, sync_delay_s=3600)
    try:
        conn = await connect(target, key_path)
        async with conn:
            plan = image_plan(plan_for([]), sim_settings(comfy_boot_timeout_s=1))
            with pytest.raises(ImageBootTimeout, match=r"main\.py does not exist"):
                await run_provision(conn, plan, remote_dir=".cf", timeout_s=60)
        assert not Layout(backend.boxes[1].sandbox).comfy_dir.exists()  # nothing touched
    finally:
        await backend.close()


async def test_torch_pin_node_requirements_keep_the_image_torch(tmp_path: Path, client_key):
    key_path, pub = client_key
    repo = make_node_repo(
        tmp_path / "repos",
        "ComfyUI-TorchHungry",
        [
            {
                "__init__.py": "NODE_CLASS_MAPPINGS = {}\n",
                "requirements.txt": "torch>=2.9\ntorchaudio\nsimnode-extra\n",
            }
        ],
    )
    backend, target = await boot(tmp_path, pub, sync_delay_s=0.0)
    try:
        layout = Layout(backend.boxes[1].sandbox)
        conn = await connect(target, key_path)
        async with conn:
            plan = image_plan(plan_for([PlannedNode(repo.name, repo.url, repo.head)]), sim_settings())
            summary = await run_provision(conn, plan, remote_dir=".cf", timeout_s=120)
        assert summary.ok and summary.nodes_installed == [repo.name]
        assert installed_version(layout.venv, "torch") == "2.8.0+cu129"  # the image's CUDA build
        assert installed_version(layout.venv, "torchaudio") == "2.8.0+cu129"
        assert installed_version(layout.venv, "simnode-extra") == "1.0.0"  # the rest went into ComfyUI's venv
        assert summary.restarted
        await wait_comfy(backend)  # a ComfyUI whose torch lost CUDA would never answer again
    finally:
        await backend.close()


async def test_torch_pin_lines_naming_the_torch_family_are_stripped(tmp_path: Path, client_key):
    key_path, pub = client_key
    repo = make_node_repo(
        tmp_path / "repos",
        "ComfyUI-Pinned",
        [
            {
                "__init__.py": "\n",
                "requirements.txt": "torchvision==0.24.1\nTorch==2.9.1 ; python_version > '3'\n",
            }
        ],
    )
    backend, target = await boot(tmp_path, pub, sync_delay_s=0.0)
    try:
        layout = Layout(backend.boxes[1].sandbox)
        conn = await connect(target, key_path)
        async with conn:
            plan = image_plan(plan_for([PlannedNode(repo.name, repo.url, repo.head)]), sim_settings())
            summary = await run_provision(conn, plan, remote_dir=".cf", timeout_s=120)
        assert summary.ok
        assert installed_version(layout.venv, "torch") == "2.8.0+cu129"
        assert installed_version(layout.venv, "torchvision") == "0.23.0+cu129"
    finally:
        await backend.close()


async def test_torch_pin_transitive_torch_upgrade_is_refused(tmp_path: Path, client_key):
    """A dependency that itself needs another torch hits the constraint: the node fails, torch stays."""
    key_path, pub = client_key
    repo = make_node_repo(
        tmp_path / "repos",
        "ComfyUI-Transitive",
        [{"__init__.py": "\n", "requirements.txt": "simnode-needs-torch\n"}],
    )
    backend, target = await boot(tmp_path, pub, sync_delay_s=0.0)
    try:
        layout = Layout(backend.boxes[1].sandbox)
        conn = await connect(target, key_path)
        async with conn:
            plan = image_plan(plan_for([PlannedNode(repo.name, repo.url, repo.head)]), sim_settings())
            with pytest.raises(NodeInstallFailed, match="ComfyUI-Transitive"):
                await run_provision(conn, plan, remote_dir=".cf", timeout_s=120)
        assert installed_version(layout.venv, "torch") == "2.8.0+cu129"
        assert installed_version(layout.venv, "simnode-needs-torch") is None
    finally:
        await backend.close()


async def test_boot_race_real_sshd_waits_for_main_py_and_marker(
    tmp_path: Path, request: pytest.FixtureRequest
):
    """Against a real OpenSSH server: nothing under the ComfyUI folder is created before the image's copy."""
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    server = request.getfixturevalue("sshd")
    comfy = tmp_path / "workspace" / "ComfyUI"
    marker = tmp_path / ".provisioning"
    marker.write_text("")
    plan = Plan(workflow="t", models=[], nodes=[], comfy_dir=str(comfy), min_free_bytes=0)
    plan = image_plan(plan, Settings(_env_file=None, comfy_boot_marker=str(marker), comfy_boot_timeout_s=60))
    events: list[dict] = []
    waiting = asyncio.Event()

    def on_event(e: dict) -> None:
        events.append(e)
        if e["event"] == "boot_wait":
            waiting.set()

    conn = await connect(server.target(), server.client_key_path)
    async with conn:
        task = asyncio.create_task(
            run_provision(conn, plan, on_event, remote_dir=str(tmp_path / "remote"), timeout_s=60)
        )
        await asyncio.wait_for(waiting.wait(), 30)
        assert not comfy.exists()  # the image's sync step would still copy ComfyUI
        comfy.mkdir(parents=True)  # 36-sync-workspace.sh: target absent -> copy
        (comfy / "main.py").write_text("")
        assert not task.done()  # the marker is still there
        marker.unlink()
        summary = await asyncio.wait_for(task, 30)
    assert summary.ok and (comfy / "models").is_dir()
    assert [e["event"] for e in events].count("boot_done") == 1


async def test_torch_pin_real_sshd_keeps_the_venv_torch(tmp_path: Path, request: pytest.FixtureRequest):
    """Against a real OpenSSH server: ComfyUI's own venv (made like the image's /venv/main) keeps torch."""
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    server = request.getfixturevalue("sshd")
    venv = tmp_path / "venv" / "main"
    python = make_venv(venv, build_index(tmp_path / "pypi"))
    repo = make_node_repo(
        tmp_path / "repos",
        "ComfyUI-TorchHungry",
        [{"__init__.py": "\n", "requirements.txt": "torch>=2.9\nsimnode-extra\n"}],
    )
    comfy = tmp_path / "ComfyUI"
    plan = Plan(
        workflow="t",
        models=[],
        nodes=[PlannedNode(repo.name, repo.url, repo.head)],
        comfy_dir=str(comfy),
        min_free_bytes=0,
        restart_cmd=None,
    )
    settings = Settings(_env_file=None, comfy_python=str(python), comfy_boot_marker=str(tmp_path / "none"))
    comfy.mkdir()
    (comfy / "main.py").write_text("")
    conn = await connect(server.target(), server.client_key_path)
    async with conn:
        summary = await run_provision(
            conn, image_plan(plan, settings), remote_dir=str(tmp_path / "r"), timeout_s=120
        )
    assert summary.ok and summary.nodes_installed == [repo.name]
    assert installed_version(venv, "torch") == "2.8.0+cu129"
    assert installed_version(venv, "simnode-extra") == "1.0.0"
