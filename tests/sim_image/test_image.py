"""The simulated instance boots like Vast's ComfyUI image (reference: vast_image.md).

Each behaviour the product tripped over on real instances is modelled here and checked on its own:
ComfyUI starts only when PORTAL_CONFIG names it (else skipped and restarted for ever), the workspace copy
happens after SSH answers and is skipped when the folder already exists, and ComfyUI's own venv holds a
CUDA torch that a node's requirements would replace.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import httpx
import pytest

from app.sim.image.layout import Layout
from app.sim.image.supervisor import portal_names_comfyui
from app.sim.image.venv import build_index, installed_version, make_venv, torch_has_cuda
from app.sim.world import SimInstanceBackend

PORTAL = "localhost:8188:18188:/:ComfyUI"
KEYS = [asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()]


async def until(cond: Callable[[], bool], within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


def body(env: dict[str, str] | None = None, onstart: str = "entrypoint.sh") -> dict:
    return {"image": "vastai/comfyui:test", "onstart": onstart, "env": {"WEB_PASSWORD": "t", **(env or {})}}


@pytest.fixture
async def backend(tmp_path: Path):
    b = SimInstanceBackend(tmp_path / "instances", internal_port=18188, step_delay_s=0.0, sync_delay_s=0.0)
    yield b
    await b.close()


async def answers(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as c:
            return (await c.get(f"http://127.0.0.1:{port}/system_stats")).status_code == 200
    except httpx.HTTPError:
        return False


def test_portal_config_parsing_follows_exit_portal():
    assert portal_names_comfyui(PORTAL)
    assert portal_names_comfyui("localhost:1111:11111:/:Instance Portal|localhost:8188:18188:/:ComfyUI")
    assert not portal_names_comfyui(None)
    assert not portal_names_comfyui("")
    assert not portal_names_comfyui("localhost:1111:11111:/:Instance Portal")


async def test_portal_config_without_comfyui_skips_and_restarts_for_ever(backend: SimInstanceBackend):
    await backend.boot(1, body(), KEYS)
    box = backend.boxes[1]
    await until(lambda: box.image.program.skips >= 3)
    assert box.comfy is None
    assert box.image.synced is True  # the image booted fine: only the portal check stops ComfyUI
    assert "Skipping ComfyUI startup" in Layout(box.sandbox).comfy_log.read_text()
    port = backend.boxes[1].ssh.port_map[18188]
    assert not await answers(port)


async def test_portal_config_naming_comfyui_starts_it(backend: SimInstanceBackend):
    await backend.boot(2, body({"PORTAL_CONFIG": PORTAL}), KEYS)
    box = backend.boxes[2]
    await until(lambda: box.comfy is not None)
    assert await answers(box.ssh.port_map[18188])
    assert box.image.program.skips == 0
    assert (box.sandbox / "workspace" / "ComfyUI" / "main.py").is_file()
    assert not Layout(box.sandbox).marker.exists()


async def test_onstart_without_entrypoint_starts_no_services(backend: SimInstanceBackend):
    await backend.boot(3, body({"PORTAL_CONFIG": PORTAL}, onstart="echo hi"), KEYS)
    box = backend.boxes[3]
    assert Layout(box.sandbox).marker.exists()
    assert not box.image.done.is_set() and box.image.program.starts == 0


async def test_boot_race_copy_is_skipped_when_the_folder_exists(tmp_path: Path):
    """What a control plane that mkdirs /workspace/ComfyUI/models as soon as SSH answers does to the image."""
    b = SimInstanceBackend(tmp_path / "i", internal_port=18188, step_delay_s=0.0, sync_delay_s=0.5)
    try:
        await b.boot(4, body({"PORTAL_CONFIG": PORTAL}), KEYS)
        box = b.boxes[4]
        layout = Layout(box.sandbox)
        assert layout.marker.exists() and not layout.comfy_dir.exists()  # SSH answers before the copy
        (layout.comfy_dir / "models").mkdir(parents=True)
        await until(lambda: box.image.done.is_set())
        assert box.image.synced is False
        assert not (layout.comfy_dir / "main.py").exists()
        await until(lambda: box.image.program.starts >= 2)  # supervisor keeps restarting it
        assert box.comfy is None
        assert "main.py" in (box.image.program.last_exit or "")
    finally:
        await b.close()


async def test_boot_race_copy_waits_for_the_configured_delay(tmp_path: Path):
    b = SimInstanceBackend(tmp_path / "i", internal_port=18188, step_delay_s=0.0, sync_delay_s=0.6)
    try:
        t0 = time.monotonic()
        await b.boot(5, body({"PORTAL_CONFIG": PORTAL}), KEYS)
        box = b.boxes[5]
        await until(lambda: box.comfy is not None)
        assert time.monotonic() - t0 >= 0.6
        assert box.image.synced is True
    finally:
        await b.close()


def test_torch_pin_image_venv_holds_cuda_torch_that_requirements_replace(tmp_path: Path):
    """The hazard itself: `pip install -r` of a node listing torch replaces the image's CUDA build."""
    index = build_index(tmp_path / "pypi")
    venv = tmp_path / "venv" / "main"
    python = make_venv(venv, index)
    assert installed_version(venv, "torch") == "2.8.0+cu129" and torch_has_cuda(venv)
    req = tmp_path / "requirements.txt"
    req.write_text("torch>=2.9\nsimnode-extra\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # as on a fresh instance
    cmd = [str(python), "-m", "pip", "install", "-q", "-r", str(req)]
    subprocess.run(cmd, check=True, timeout=120, env=env)
    assert installed_version(venv, "torch") == "2.9.1"
    assert not torch_has_cuda(venv)
    assert installed_version(venv, "simnode-extra") == "1.0.0"


async def test_torch_pin_lost_cuda_keeps_comfyui_down(backend: SimInstanceBackend):
    await backend.boot(6, body({"PORTAL_CONFIG": PORTAL}), KEYS)
    box = backend.boxes[6]
    await until(lambda: box.comfy is not None)
    await backend.teardown(6)
    layout = Layout(box.sandbox)
    init = next(layout.venv.glob("lib/python*/site-packages/torch/__init__.py"))
    init.write_text('__version__ = "2.9.1"\ncuda = None\n')
    await backend.boot(6, body({"PORTAL_CONFIG": PORTAL}), KEYS)  # a restart on the same disk
    box = backend.boxes[6]
    await until(lambda: box.image.program.starts >= 2)
    assert box.comfy is None and "CUDA" in (box.image.program.last_exit or "")


async def test_slow_host_simulated_market_has_slow_machines(tmp_path: Path):
    from app.sim.vast import default_market
    from app.sim.world import is_slow_host

    machines = [str(o["machine_id"]) for o in default_market()]
    slow = [m for m in machines if is_slow_host(m, 0.2)]
    assert 0.1 < len(slow) / len(machines) < 0.3
    assert not any(is_slow_host(m, 0.0) for m in machines)
    fast = next(m for m in machines if not is_slow_host(m, 0.2))
    b = SimInstanceBackend(
        tmp_path / "i", internal_port=18188, step_delay_s=0.1, slow_fraction=0.2, slow_factor=3.0
    )
    b.machine_of = {1: slow[0], 2: fast}.get
    try:
        await b.boot(1, body({"PORTAL_CONFIG": PORTAL}), KEYS)
        await b.boot(2, body({"PORTAL_CONFIG": PORTAL}), KEYS)
        await until(lambda: b.boxes[1].comfy is not None and b.boxes[2].comfy is not None)
        assert b.boxes[1].comfy.step_delay_s == pytest.approx(0.3)
        assert b.boxes[2].comfy.step_delay_s == pytest.approx(0.1)
    finally:
        await b.close()


def test_instances_booting_at_once_build_the_package_index_without_a_rename_race(tmp_path, monkeypatch):
    # Four instances of a 20-job batch booted together and each built the shared index: both writers of a
    # wheel used one `.tmp`, the first renamed it away and the second boot failed ("No such file or
    # directory"). Here two builders are held inside their first wheel's write until both are there.
    import threading
    import zipfile

    import app.sim.image.venv as venv_module

    both_writing = threading.Barrier(2, timeout=20)
    held: set[int] = set()
    real_zipfile = zipfile.ZipFile

    class HeldZipFile(real_zipfile):
        def close(self) -> None:
            super().close()
            if threading.get_ident() not in held:
                held.add(threading.get_ident())
                both_writing.wait()

    monkeypatch.setattr(venv_module.zipfile, "ZipFile", HeldZipFile)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            build_index(tmp_path / "pypi")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    wheels = sorted((tmp_path / "pypi").iterdir())
    assert wheels and all(w.suffix == ".whl" for w in wheels)  # no temp file left behind
    for w in wheels:
        with real_zipfile(w) as zf:
            assert zf.testzip() is None
