"""The reaper destroys an instance idle past IDLE_TTL_S and an orphan (our label, unknown to the ledger),
and nothing else: in the server (`Cleaner.run_once`) and as `comfyfleet cleanup` for cron, next to a
`comfyfleet sim` world running in its own process."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import select

from app.jobs.models import CleanupAction
from app.pool.provider import InstanceState
from tests.e2e import procs
from tests.e2e.conftest import b64, png_bytes, sim_api

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

ORPHAN_LABEL = "comfyfleet-default-0rphan0rphan"
FOREIGN_LABEL = "someone-elses-training-run"


async def test_cleanup_destroys_an_idle_instance_and_an_orphan_but_not_a_foreign_one(tmp_path):
    async with sim_api(tmp_path / "data", idle_ttl_s=0.5) as sim:
        body = {"image_base64": b64(png_bytes()), "prompt": "x", "num_frames": 9, "width": 256, "height": 256}
        job = await sim.finished((await sim.submit(body))["job_id"])
        assert job["state"] == "succeeded", job["error"]
        idle_id = job["result"]["instance_id"]
        world = sim.world.endpoints
        orphan_id = await asyncio.to_thread(procs.rent_directly, world, ORPHAN_LABEL)
        foreign_id = await asyncio.to_thread(procs.rent_directly, world, FOREIGN_LABEL)
        assert set(sim.emulator.instances) == {int(idle_id), orphan_id, foreign_id}
        await asyncio.sleep(0.6)  # past the idle TTL

        cleaner = sim.services.cleaner
        planned = await cleaner.run_once(dry_run=True)
        assert {(a.kind, a.target) for a in planned if a.kind.endswith("_instance")} == {
            ("idle_instance", idle_id),
            ("orphan_instance", str(orphan_id)),
        }
        assert set(sim.emulator.instances) == {int(idle_id), orphan_id, foreign_id}  # dry run: untouched

        actions = await cleaner.run_once()
        done = {(a.kind, a.target): a for a in actions if a.kind.endswith("_instance")}
        assert set(done) == {("idle_instance", idle_id), ("orphan_instance", str(orphan_id))}
        assert all(a.ok and not a.dry_run for a in done.values()), actions
        assert "idle for" in done["idle_instance", idle_id].reason
        assert "unknown to the ledger" in done["orphan_instance", str(orphan_id)].reason

        assert set(sim.emulator.instances) == {foreign_id}
        assert {int(idle_id), orphan_id} <= set(sim.emulator.destroyed)
        assert set(sim.world.backend.boxes) == {foreign_id}  # their SSH servers and ComfyUIs are gone
        assert (await sim.services.ledger.get(idle_id)).state is InstanceState.DESTROYED
        assert sim.services.pool.members == {}
        async with sim.services.sessionmaker() as s:
            rows = (await s.execute(select(CleanupAction))).scalars().all()
        recorded = {(r.kind, r.target, r.dry_run, r.ok) for r in rows}
        assert ("idle_instance", idle_id, False, True) in recorded
        assert ("orphan_instance", str(orphan_id), True, True) in recorded
        assert ("orphan_instance", str(orphan_id), False, True) in recorded

        # The pool does not hold on to the destroyed instance: the next job rents a fresh one.
        again = await sim.finished((await sim.submit({**body, "prompt": "y"}))["job_id"])
        assert again["state"] == "succeeded", again["error"]
        assert again["result"]["instance_id"] not in (idle_id, str(orphan_id), str(foreign_id))


def test_cleanup_command_destroys_idle_and_orphaned_instances_of_a_running_sim_world(tmp_path):
    data = tmp_path / "data"
    env = procs.sim_env(data)
    log = tmp_path / "sim.log"
    with procs.spawn(["sim"], env, log) as sim:
        world = procs.wait_world(sim, data, log)
        image = tmp_path / "in.png"
        image.write_bytes(png_bytes())
        gen = procs.run(
            ["generate", "--image", str(image), "--prompt", "p", "--frames", "9", "--width", "256",
             "--height", "256", "--output", str(tmp_path / "o.mp4"), "--json"],
            env,
        )  # fmt: skip
        assert gen.returncode == 0, gen.stderr[-3000:]
        idle_id = json.loads(gen.stdout)["result"]["instance_id"]
        orphan_id = procs.rent_directly(world, ORPHAN_LABEL)
        foreign_id = procs.rent_directly(world, FOREIGN_LABEL)
        assert {str(i["id"]) for i in procs.vast_instances(world)} == {
            idle_id,
            str(orphan_id),
            str(foreign_id),
        }

        out = procs.run(["cleanup", "--json"], {**env, "IDLE_TTL_S": "0"})
        assert out.returncode == 0, out.stderr[-3000:]
        actions = json.loads(out.stdout)
        done = {(a["kind"], a["target"]) for a in actions if a["kind"].endswith("_instance") and a["ok"]}
        assert done == {("idle_instance", idle_id), ("orphan_instance", str(orphan_id))}, actions
        assert {str(i["id"]) for i in procs.vast_instances(world)} == {str(foreign_id)}

        rows = {i.id: i for i in procs.ledger(data)}
        assert rows[idle_id].state is InstanceState.DESTROYED
        assert rows[str(orphan_id)].state is InstanceState.DESTROYED  # recorded as it was destroyed
        assert str(foreign_id) not in rows  # never taken for ours
