"""The simulated world: everything comfyfleet talks to, on this machine, with no account and no GPU.

- a Vast.ai API emulator (`app.sim.vast`) with a default market of offers;
- behind each instance it rents: a sandbox that boots like Vast's ComfyUI image (`app.sim.image`: the
  workspace copy after SSH answers, the portal check, ComfyUI's own venv), a real SSH server running real
  shell commands (`app.sim.sshserver`) and a ComfyUI API emulator (`app.sim.comfyui`) listening on the
  instance's "loopback" (the SSH server maps 127.0.0.1:<comfy_internal_port> to it, so the product's SSH
  tunnel is the same as on Vast);
- a model-file server standing in for Hugging Face (`app.sim.modelserver`), and local git repos standing
  in for the custom nodes' GitHub repos.

The product code cannot tell: `start_world` returns the settings that point it at these far ends (the Vast
API URL and key, the model mirror, the custom-node sources, a ComfyUI dir under the SSH user's home) and
keeps `provider = "sim"`, so every result is labelled simulated. `comfyfleet sim` runs a world on its own
and writes its endpoints to `<data_dir>/sim/world.json`; a later `serve`/`generate` attaches to it instead
of starting a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from app.config import Settings
from app.sim.comfyui import ComfyEmulator, default_object_info
from app.sim.comfyui.server import _free_port
from app.sim.idseq import IdSequence
from app.sim.image import Layout, SimImage
from app.sim.image.layout import SIM_BOOT_MARKER, SIM_COMFY_DIR, SIM_COMFY_LOG, SIM_COMFY_PYTHON
from app.sim.image.venv import build_index, make_venv
from app.sim.modelserver import ModelServer, default_files, sim_node_sources
from app.sim.sshserver import SandboxSSHServer, sim_restart_command
from app.sim.store import FaultyStore, RemoteFaults, StoreFaults, local_faults
from app.sim.vast import BackendInfo, VastEmulator, default_market
from app.workflows import load_workflows

log = logging.getLogger(__name__)

_PYPI_DIR = "pypi"  # the simulated package index (wheels standing in for PyPI)


def is_slow_host(machine_id: str | None, fraction: float) -> bool:
    """Whether the simulated market's machine is one of its slow hosts (a fixed, uniform pick by id)."""
    if not machine_id or fraction <= 0:
        return False
    digest = hashlib.sha256(f"slow-host:{machine_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class _Box:
    """One running simulated instance: its SSH server, its image's boot, and its ComfyUI emulator (None
    until the image's supervisor starts it)."""

    sandbox: Path
    ssh: SandboxSSHServer
    image: SimImage
    comfy: ComfyEmulator | None = None


class SimInstanceBackend:
    """`app.sim.vast.InstanceBackend`: what boots "inside" each rented simulated instance (an instance
    that boots like Vast's ComfyUI image, `app.sim.image`)."""

    def __init__(
        self,
        root: Path,
        *,
        internal_port: int,
        step_delay_s: float,
        sync_delay_s: float = 0.0,
        model_load_s: float = 0.0,
        slow_fraction: float = 0.0,
        slow_factor: float = 1.0,
    ) -> None:
        self.root = root
        self.model_load_s = model_load_s
        self.slow_fraction = slow_fraction
        self.slow_factor = slow_factor
        # instance id -> its machine id (set by start_world from the emulator's instances)
        self.machine_of: Any = lambda _instance_id: None
        self.internal_port = internal_port
        self.step_delay_s = step_delay_s
        self.sync_delay_s = sync_delay_s
        self.object_info = default_object_info()
        self.boxes: dict[int, _Box] = {}

    async def boot(self, instance_id: int, create_body: dict[str, Any], ssh_keys: list[str]) -> BackendInfo:
        await self.teardown(instance_id)  # a restart boots again on the same disk
        sandbox = self.root / f"instance-{instance_id}"
        layout = Layout(sandbox)
        env = create_body.get("env") if isinstance(create_body.get("env"), dict) else {}
        published = any(k.startswith("-p ") and k.split(":")[-1].startswith("8188") for k in env)
        # On Vast's image ComfyUI's internal port (reached through the SSH tunnel) has no auth; Caddy checks
        # the WEB_PASSWORD token on the published port. One emulator stands for both: it requires the
        # token only when the port is published.
        token = (env.get("WEB_PASSWORD") or None) if published else None
        comfy_port = _free_port("127.0.0.1")  # fixed now, listened on once supervisor starts ComfyUI
        step_delay_s = self.step_delay_s
        if is_slow_host(self.machine_of(instance_id), self.slow_fraction):
            step_delay_s *= self.slow_factor  # a slow host: thermals, a shared PCIe switch, a bad card
        comfy_url = f"http://127.0.0.1:{comfy_port}"
        restart = sim_restart_command(comfy_url)
        if token:
            restart = restart.replace("curl ", f"curl -H 'Authorization: Bearer {token}' ", 1)
        index = self.root / _PYPI_DIR
        await asyncio.to_thread(build_index, index)
        await asyncio.to_thread(layout.bake, restart)
        await asyncio.to_thread(make_venv, layout.venv, index)
        box: _Box

        async def start_comfy() -> None:
            comfy = ComfyEmulator(
                layout.comfy_dir,
                object_info=self.object_info,
                step_delay_s=step_delay_s,
                token=token,
                model_load_s=self.model_load_s,
            )
            await comfy.start("127.0.0.1", comfy_port)
            box.comfy = comfy

        image = SimImage(layout, create_body, start_comfy=start_comfy, sync_delay_s=self.sync_delay_s)
        ssh = SandboxSSHServer(sandbox, ssh_keys, port_map={self.internal_port: comfy_port})
        ssh_port = await ssh.start("127.0.0.1", 0)
        box = _Box(sandbox, ssh, image)
        self.boxes[instance_id] = box
        image.start()  # onstart, once SSH answers
        ports = {"22/tcp": ssh_port}
        if published:
            ports["8188/tcp"] = comfy_port  # direct access: ComfyUI published, token required
        return BackendInfo(public_ipaddr="127.0.0.1", ssh_host="127.0.0.1", ssh_port=ssh_port, ports=ports)

    async def add_ssh_key(self, instance_id: int, key: str) -> None:
        box = self.boxes.get(instance_id)
        if box is not None:
            box.ssh.add_authorized_key(key)

    async def teardown(self, instance_id: int) -> None:
        box = self.boxes.pop(instance_id, None)
        if box is None:
            return
        with contextlib.suppress(Exception):
            await box.image.stop()
        with contextlib.suppress(Exception):
            await box.ssh.stop()
        if box.comfy is not None:
            with contextlib.suppress(Exception):
                await box.comfy.stop()

    async def close(self) -> None:
        for instance_id in list(self.boxes):
            await self.teardown(instance_id)


@dataclass
class World:
    """A running (or attached) simulated world and the settings that point the product at it."""

    settings: Settings
    endpoints: dict[str, Any]
    emulator: VastEmulator | None = None
    mirror: ModelServer | None = None
    backend: SimInstanceBackend | None = None
    root: Path | None = None
    attached: bool = False
    keep: bool = False  # keep the world's folder (its instances' sandboxes) when it stops
    # the result store's fault switches (app.sim.store); an attached world's live in its own process
    store_faults: StoreFaults = field(default_factory=StoreFaults)
    _stopped: bool = field(default=False, repr=False)

    async def stop(self) -> None:
        """Stop what this process started (an attached world keeps running in its own process)."""
        if self._stopped or self.attached:
            return
        self._stopped = True
        if self.backend is not None:
            await self.backend.close()
        if self.emulator is not None:
            await self.emulator.stop()
        if self.mirror is not None:
            await self.mirror.stop()
        if self.root is not None:
            marker = self.root.parent / "world.json"
            with contextlib.suppress(OSError, ValueError):
                if json.loads(marker.read_text()).get("pid") == os.getpid():
                    marker.unlink()
            if self.keep:
                log.info("simulated world: kept its files in %s", self.root)
            else:  # ~30 MB of sandboxes per world; a world's files go with it
                await asyncio.to_thread(shutil.rmtree, self.root, True)

    def wrap_store(self, store: Any) -> tuple[FaultyStore, Any]:
        """The product's store behind this world's store fault switches, and what closes the wrapper.
        A world in this process: its `store_faults` directly; an attached one: over HTTP."""
        if self.attached:
            remote = RemoteFaults(self.endpoints["vast_api_url"])
            return FaultyStore(store, remote), remote.aclose
        return FaultyStore(store, local_faults(self.store_faults)), None

    def describe(self) -> list[tuple[str, str]]:
        e = self.endpoints
        return [
            ("Vast.ai API emulator", f"{e['vast_api_url']}  (key {e['vast_api_key']})"),
            ("model-file server", e["model_mirror_url"]),
            ("custom-node git repos", ", ".join(f"{k}: {v[0]}" for k, v in e["custom_node_sources"].items())),
            ("instances (sandboxes)", e["instances_dir"]),
            ("result store faults", f"{e['vast_api_url']}/__sim/store/faults"),
        ]


def world_settings(settings: Settings, endpoints: dict[str, Any]) -> Settings:
    """The product's settings, pointed at the world's far ends; provider stays "sim" (results say so)."""
    return settings.model_copy(
        update={
            "provider": "sim",
            "vast_api_url": endpoints["vast_api_url"],
            "vast_api_key": SecretStr(endpoints["vast_api_key"]),
            "model_mirror_url": endpoints["model_mirror_url"],
            "custom_node_sources": {k: tuple(v) for k, v in endpoints["custom_node_sources"].items()},
            "comfy_dir": SIM_COMFY_DIR,
            "comfy_python": SIM_COMFY_PYTHON,
            "comfy_boot_marker": SIM_BOOT_MARKER,
            "comfy_log_path": SIM_COMFY_LOG,
            "hf_token": None,
        }
    )


def _model_specs(settings: Settings) -> list:
    """The files every known workflow needs, as small generated stand-ins (real names and folders)."""
    specs = {(f.folder, f.name): f for f in default_files()}
    try:
        workflows = load_workflows(settings)
    except Exception as exc:  # a broken user workflow must not stop the world
        log.warning("simulated world: could not load every workflow (%s); serving the default files", exc)
        return list(specs.values())
    from app.sim.modelserver import FileSpec

    for wf in workflows.values():
        for m in wf.models:
            specs.setdefault((m.folder, m.name), FileSpec(m.folder, m.name, 2 * 1024 * 1024))
    return list(specs.values())


def _node_names(settings: Settings) -> list[str]:
    try:
        return sorted({n.name for wf in load_workflows(settings).values() for n in wf.custom_nodes})
    except Exception:
        return ["ComfyUI-GGUF", "comfyui-videohelpersuite"]


async def _attach(settings: Settings, marker: Path, *, busy_within_s: float = 30.0) -> World | None:
    """A world started by `comfyfleet sim` in another process, if it is still answering.

    A world whose Vast emulator is busy (its fault switches answering 429 or 5xx, or slow under load)
    is still there: while its process lives the check is tried again for `busy_within_s`, so a server
    started at that moment attaches to it instead of starting a second, private world (whose instances
    the rest of the fleet would never see). Refused connections, a dead process or a wrong key: none."""
    try:
        endpoints = json.loads(marker.read_text())  # noqa: ASYNC240 (a tiny local file)
        url = endpoints["vast_api_url"].rstrip("/") + "/api/v0/users/current/"
        headers = {"Authorization": f"Bearer {endpoints['vast_api_key']}"}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    deadline = time.monotonic() + busy_within_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                r = await client.get(url, headers=headers)
                if r.status_code == 200:
                    return World(world_settings(settings, endpoints), endpoints, attached=True)
                if r.status_code != 429 and r.status_code < 500:
                    return None
                busy = f"HTTP {r.status_code}"
            except httpx.ConnectError:
                return None
            except httpx.HTTPError as exc:
                busy = type(exc).__name__
            if not _alive(endpoints.get("pid")) or time.monotonic() >= deadline:
                return None
            log.info("simulated world of process %s is busy (%s); trying again", endpoints.get("pid"), busy)
            await asyncio.sleep(0.5)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def attach_world(settings: Settings) -> World | None:
    """The world a `comfyfleet sim` published for `settings.data_dir`, if it is running; never starts one
    (for one-shot commands such as `comfyfleet cleanup` that must see that world's instances)."""
    return await _attach(settings, (settings.data_dir / "sim" / "world.json").resolve())


async def start_world(settings: Settings, *, attach: bool = True, fresh: bool = False) -> World:
    """Start (or attach to) the simulated world for `settings.data_dir`."""
    base = (settings.data_dir / "sim").resolve()
    marker = base / "world.json"
    if attach and not fresh:
        world = await _attach(settings, marker)
        if world is not None:
            log.info("attached to the simulated world of process %s", world.endpoints.get("pid"))
            return world
    root = base / f"world-{os.getpid()}"
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
    if not settings.sim_keep_world:
        await asyncio.to_thread(_sweep_dead_worlds, base)
    root.mkdir(parents=True)
    mirror = ModelServer(base / "models", _model_specs(settings))
    mirror_url = await mirror.start("127.0.0.1", 0)
    node_sources = await asyncio.to_thread(sim_node_sources, base / "repos", _node_names(settings))
    backend = SimInstanceBackend(
        root / "instances",
        internal_port=settings.comfy_internal_port,
        step_delay_s=settings.sim_step_delay_s,
        sync_delay_s=settings.sim_workspace_sync_delay_s,
        model_load_s=settings.sim_model_load_s,
        slow_fraction=settings.sim_slow_host_fraction,
        slow_factor=settings.sim_slow_host_factor,
    )
    api_key = "sim-" + secrets.token_hex(16)
    emulator = VastEmulator(
        default_market(),
        api_key=api_key,
        time_scale=settings.sim_time_scale,
        backend=backend,
        ids=IdSequence(base / "instance-ids", 27_400_001),  # unique for this data dir, as on Vast
    )

    def machine_of(instance_id: int) -> str | None:
        inst = emulator.instances.get(instance_id)
        return str(inst.offer.get("machine_id")) if inst is not None else None

    backend.machine_of = machine_of
    store_faults = StoreFaults()
    emulator.extra_routes.extend(store_faults.routes())
    try:
        vast_url = await emulator.start("127.0.0.1", 0)
    except BaseException:
        await mirror.stop()
        raise
    endpoints = {
        "simulated": True,
        "pid": os.getpid(),
        "vast_api_url": vast_url.rstrip("/"),
        "vast_api_key": api_key,  # a simulated key: printing it is fine
        "model_mirror_url": mirror_url.rstrip("/"),
        "custom_node_sources": {k: list(v) for k, v in node_sources.items()},
        "instances_dir": str(root / "instances"),
    }
    world = World(
        world_settings(settings, endpoints),
        endpoints,
        emulator,
        mirror,
        backend,
        root,
        keep=settings.sim_keep_world,
        store_faults=store_faults,
    )
    return world


def _sweep_dead_worlds(base: Path) -> None:
    """Remove `world-<pid>` folders whose process is gone (killed before it could clean up)."""
    for path in base.glob("world-*"):
        pid = path.name.removeprefix("world-")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("simulated world: removing %s (its process %s is gone)", path, pid)
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue


def publish(world: World) -> Path:
    """Write the world's endpoints where a later `serve`/`generate` finds them (`comfyfleet sim`)."""
    marker = (world.settings.data_dir / "sim" / "world.json").resolve()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(world.endpoints, indent=2))
    return marker
