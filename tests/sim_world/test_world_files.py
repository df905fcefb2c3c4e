"""The simulated world's files and ids: a world's folder goes with it (unless asked to keep it), folders
of worlds whose process died are swept, and instance ids are unique for a data directory."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from pathlib import Path

import asyncssh
import httpx

from app.config import Settings
from app.sim.idseq import IdSequence
from app.sim.world import start_world
from tests.e2e.conftest import eventually


def _settings(data_dir: Path, **kw) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, provider="sim", sim_time_scale=0.0, **kw)


async def _rent(world) -> int:
    """Rent one instance from the world's Vast emulator (it boots a sandbox under the world's folder)."""
    e = world.endpoints
    headers = {"Authorization": f"Bearer {e['vast_api_key']}"}
    async with httpx.AsyncClient(base_url=e["vast_api_url"], headers=headers, timeout=10) as client:
        if not world.emulator.account_keys:  # an instance boots with the account's SSH keys
            key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
            (await client.post("/api/v0/ssh/", json={"ssh_key": key})).raise_for_status()
        offers = (await client.get("/api/v0/bundles/", params={"q": "{}"})).json()["offers"]
        for offer in offers:
            r = await client.put(
                f"/api/v0/asks/{offer['id']}/",
                json={"image": "vastai/comfy", "disk": 40, "label": "comfyfleet-test-x", "runtype": "ssh"},
            )
            if r.status_code == 200:
                return int(r.json()["new_contract"])
    raise AssertionError("no offer could be rented")


async def _wait_booted(world, instance_id: int) -> None:
    async def booted() -> bool:
        return instance_id in world.backend.boxes

    await eventually(booted, 20, f"instance {instance_id} to boot")


async def test_world_files_are_removed_when_the_world_stops(tmp_path):
    world = await start_world(_settings(tmp_path), attach=False)
    try:
        instance_id = await _rent(world)
        await _wait_booted(world, instance_id)
        root = world.root
        assert root is not None and (root / "instances" / f"instance-{instance_id}").is_dir()
    finally:
        await world.stop()
    assert not root.exists()
    assert not list((tmp_path / "sim").glob("world-*"))


async def test_world_files_are_kept_when_asked(tmp_path):
    world = await start_world(_settings(tmp_path, sim_keep_world=True), attach=False)
    try:
        instance_id = await _rent(world)
        await _wait_booted(world, instance_id)
    finally:
        await world.stop()
    assert (world.root / "instances" / f"instance-{instance_id}").is_dir()


async def test_folders_of_worlds_whose_process_died_are_swept_when_a_world_starts(tmp_path):
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()  # reaped: its pid names no process now
    dead_dir = tmp_path / "sim" / f"world-{dead.pid}"
    (dead_dir / "instances").mkdir(parents=True)
    alive_dir = tmp_path / "sim" / f"world-{os.getppid()}"  # a live process: its world is not ours to remove
    alive_dir.mkdir(parents=True)
    world = await start_world(_settings(tmp_path), attach=False)
    await world.stop()
    assert not dead_dir.exists()
    assert alive_dir.exists()


async def test_simulated_instance_ids_are_unique_across_worlds_of_one_data_directory(tmp_path):
    ids = []
    for _ in range(2):  # one world after the other, as two `generate` runs
        world = await start_world(_settings(tmp_path), attach=False)
        try:
            ids.append(await _rent(world))
            ids.append(await _rent(world))
        finally:
            await world.stop()
    assert len(set(ids)) == 4, ids
    assert ids == sorted(ids)


def _take(path: str, n: int, out) -> None:
    seq = IdSequence(path, 1000)
    out.put([seq() for _ in range(n)])


def test_id_sequence_is_unique_across_processes_taking_ids_at_once(tmp_path):
    path = str(tmp_path / "ids")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take, args=(path, 50, out)) for _ in range(4)]
    for p in procs:
        p.start()
    taken = [i for _ in procs for i in out.get(timeout=60)]
    for p in procs:
        p.join(30)
    assert sorted(taken) == list(range(1000, 1200))
    assert IdSequence(path, 1000)() == 1200


def test_comfyfleet_sim_stopped_by_sigterm_removes_its_world_folder(tmp_path):
    """`comfyfleet sim` ends on SIGTERM (how services and the e2e tests stop it) as on Ctrl-C: cleanly."""
    from tests.e2e import procs

    data = tmp_path / "data"
    log = tmp_path / "sim.log"
    with procs.spawn(["sim"], procs.sim_env(data), log) as proc:
        world = procs.wait_world(proc, data, log)
        assert Path(world["instances_dir"]).parent.is_dir()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, procs.tail(log)
    assert not Path(world["instances_dir"]).parent.exists()
    assert not (data / "sim" / "world.json").exists()
    assert "Traceback" not in log.read_text()
