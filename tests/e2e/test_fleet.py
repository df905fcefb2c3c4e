"""The fleet through the API in the simulated world: instances with their provisioning per file, a model
file corrupted on the machine found by verify and fixed by refetch, an instance destroyed under a running
job (the job is requeued and finishes elsewhere), and the money."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import b64, png_bytes, sim_api

BODY = {"image_base64": b64(png_bytes()), "num_frames": 9, "width": 256, "height": 256}


def _model_files(sim, instance_id: str) -> list:
    models = sim.comfy(instance_id).install.comfy_dir / "models"
    return sorted(p for p in models.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.mark.usefixtures("database")  # the database matters here: runs on SQLite and on PostgreSQL
async def test_instances_show_state_money_workflows_and_per_file_provisioning(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        job = (
            await sim.client.post("/vastai/generate-video", json={**BODY, "prompt": "a", "wait": 60})
        ).json()
        assert job["state"] == "succeeded", job["error"]
        instance_id = job["result"]["instance_id"]

        listing = (await sim.client.get("/instances")).json()
        assert listing["simulated"] is True
        [inst] = listing["instances"]
        assert inst["id"] == instance_id and inst["state"] == "ready" and inst["in_pool"] is True
        assert inst["workflows"] == ["wan22_i2v_lightx2v_gguf"] and inst["current_job"] is None
        assert inst["price_per_hour"] > 0 and inst["uptime_s"] > 0 and inst["spent_usd"] > 0
        assert inst["gpu_name"]

        detail = (await sim.client.get(f"/instances/{instance_id}")).json()
        [prov] = detail["provisioning"]
        assert prov["workflow"] == "wan22_i2v_lightx2v_gguf" and prov["state"] == "done"
        assert len(prov["files"]) == 6 and prov["files_verified"] == 6
        for f in prov["files"]:
            assert f["verified"] and f["state"] == "verified"
            assert f["bytes_done"] == f["bytes_total"] > 0 and len(f["sha256"]) == 64
        assert prov["bytes_done"] == prov["bytes_total"]

        spend = (await sim.client.get("/spend")).json()
        assert spend["today_usd"] > 0 and spend["month_usd"] >= spend["today_usd"]
        assert spend["cap_usd"] == sim.services.settings.spend_cap_usd
        [mine] = spend["per_instance"]
        assert mine["id"] == instance_id and mine["today_usd"] > 0
        [wf] = spend["per_workflow"]
        assert wf["workflow"] == "wan22_i2v_lightx2v_gguf" and wf["jobs_today"] == 1
        assert abs(wf["today_usd"] - job["cost_usd"]) < 1e-9


async def test_verify_finds_a_model_file_changed_on_the_machine_and_refetch_fixes_it(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        job = (
            await sim.client.post("/vastai/generate-video", json={**BODY, "prompt": "a", "wait": 60})
        ).json()
        instance_id = job["result"]["instance_id"]

        report = (await sim.client.post(f"/instances/{instance_id}/verify")).json()
        assert report["ok"] is True and report["refetch"] is False
        [checked] = report["workflows"]
        assert len(checked["files"]) == 6 and all(f["status"] == "ok" for f in checked["files"])

        # Bytes change under the sidecar's nose: same size, same mtime (a disk fault, a careless edit).
        victim = _model_files(sim, instance_id)[0]
        st = victim.stat()
        with victim.open("r+b") as fh:
            fh.seek(st.st_size // 2)
            fh.write(b"\xff\x00\xff\x00")
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

        report = (await sim.client.post(f"/instances/{instance_id}/verify")).json()
        assert report["ok"] is False
        bad = [f for f in report["workflows"][0]["files"] if not f["ok"]]
        assert [(f["name"], f["status"]) for f in bad] == [(victim.name, "mismatch")]
        assert bad[0]["actual_sha256"] != bad[0]["expected_sha256"]

        report = (
            await sim.client.post(f"/instances/{instance_id}/verify", params={"refetch": "true"})
        ).json()
        assert report["ok"] is True
        fixed = [f for f in report["workflows"][0]["files"] if f["refetched"]]
        assert [(f["name"], f["status"]) for f in fixed] == [(victim.name, "ok")]
        again = (await sim.client.post(f"/instances/{instance_id}/verify")).json()
        assert again["ok"] is True

        # The instance still serves jobs afterwards.
        job = (
            await sim.client.post("/vastai/generate-video", json={**BODY, "prompt": "b", "wait": 60})
        ).json()
        assert job["state"] == "succeeded" and job["result"]["instance_id"] == instance_id


@pytest.mark.usefixtures("database")  # the database matters here: runs on SQLite and on PostgreSQL
async def test_destroying_an_instance_under_a_running_job_requeues_the_job_elsewhere(tmp_path):
    async with sim_api(tmp_path / "data", pool_max_instances=2, sim_step_delay_s=0.25) as sim:
        job_id = (
            await sim.client.post("/vastai/generate-video", json={**BODY, "prompt": "x", "steps": 8})
        ).json()["job_id"]
        await sim.wait_job(job_id, lambda j: str(j["stage"] or "").startswith("sampling"))
        doomed = (await sim.client.get("/instances")).json()["instances"][0]
        assert doomed["current_job"] == job_id

        # Refetching model files under a running job is refused, and changes nothing.
        r = await sim.client.post(f"/instances/{doomed['id']}/verify", params={"refetch": "true"})
        assert r.status_code == 409 and job_id in r.json()["detail"], r.text
        assert sim.services.pool.members[doomed["id"]].paused is None

        r = await sim.client.delete(f"/instances/{doomed['id']}")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["destroyed"] is True and [j["job_id"] for j in report["requeued_jobs"]] == [job_id]
        assert int(doomed["id"]) in sim.emulator.destroyed

        done = await sim.finished(job_id, within_s=60)
        assert done["state"] == "succeeded", done["error"]
        assert done["result"]["instance_id"] != doomed["id"]
        assert done["attempts"] == 0  # not the job's fault: no attempt counted
        listing = (await sim.client.get("/instances")).json()["instances"]
        assert doomed["id"] not in [i["id"] for i in listing]

        r = await sim.client.delete(f"/instances/{doomed['id']}")
        assert r.status_code in (404, 409), r.text


@pytest.mark.usefixtures("database")  # the database matters here: runs on SQLite and on PostgreSQL
async def test_instances_and_spend_of_an_empty_fleet(tmp_path):
    async with sim_api(tmp_path / "data") as sim:
        assert (await sim.client.get("/instances")).json()["instances"] == []
        spend = (await sim.client.get("/spend")).json()
        assert spend["today_usd"] == 0 and spend["per_instance"] == [] and spend["per_workflow"] == []

        assert sim.instances_ever_created() == 0  # looking costs nothing
