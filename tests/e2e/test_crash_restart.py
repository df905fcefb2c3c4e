"""The control plane is SIGKILLed mid-job and started again: the job is re-attached to its ComfyUI prompt
and finishes (without running a second time), and no instance exists that the ledger does not know.

Real processes: `comfyfleet sim` holds the world (Vast emulator, instances with SSH + ComfyUI), so it
survives the server's death exactly like Vast.ai and the rented GPU would; `comfyfleet serve` runs twice
on the same DATA_DIR (same SQLite job store and instance ledger)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e import procs
from tests.e2e.conftest import b64, free_port, png_bytes

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


def _poll(url: str, pred, within_s: float = 60.0) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        job = httpx.get(url, timeout=10).json()
        if pred(job):
            return job
        assert time.monotonic() < deadline, f"job stuck: {job}"
        time.sleep(0.05)


def test_server_sigkilled_mid_sampling_reattaches_after_restart_and_leaks_no_instance(tmp_path):
    data = tmp_path / "data"
    # A stable REPLICA_ID, as a restarted deployment has: the restarted server resumes its own jobs at once
    # (a lapsed claim taken over by another replica is tests/e2e/test_replicas.py's case).
    env = procs.sim_env(data, sim_step_delay_s=0.4, replica_id="crash-test")
    sim_log, serve_log = tmp_path / "sim.log", tmp_path / "serve.log"
    with procs.spawn(["sim"], env, sim_log) as sim:
        world = procs.wait_world(sim, data, sim_log)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with procs.spawn(["serve", "--port", str(port)], env, serve_log) as server:
            procs.wait_http(f"{base}/readyz", server, serve_log)
            body = {
                "image_base64": b64(png_bytes()),
                "prompt": "crash test",
                "num_frames": 9,
                "width": 256,
                "height": 256,
                "steps": 8,
                "seed": 99,
            }
            r = httpx.post(f"{base}/vastai/generate-video", json=body, timeout=30)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            status_url = f"{base}/jobs/{job_id}"
            job = _poll(status_url, lambda j: str(j["stage"] or "").startswith("sampling"), 30)
            assert job["state"] == "running"

            os.killpg(server.pid, signal.SIGKILL)  # no shutdown code runs
            server.wait(10)

        # The GPU work goes on without a control plane; the row still says running.
        [inst] = procs.vast_instances(world)
        assert inst["actual_status"] == "running"

        port2 = free_port()
        base2 = f"http://127.0.0.1:{port2}"
        with procs.spawn(["serve", "--port", str(port2)], env, serve_log) as server2:
            procs.wait_http(f"{base2}/readyz", server2, serve_log)
            job = _poll(
                f"{base2}/jobs/{job_id}", lambda j: j["state"] in ("succeeded", "failed", "cancelled")
            )
            log_text = serve_log.read_text(errors="replace")
            assert job["state"] == "succeeded", (job, procs.tail(serve_log))
            assert f"recovery: job {job_id} reattaching" in log_text
            result = job["result"]
            assert result["instance_id"] == str(inst["id"]) and result["seed"] == 99
            assert job["attempts"] == 0  # re-attached, not run again
            video = httpx.get(result["video_url"], timeout=30)
            assert video.status_code == 200 and len(video.content) == result["video_size_bytes"]
        # The prompt ran on the GPU once: one video in that ComfyUI's output folder for this job.
        outputs = Path(world["instances_dir"]) / f"instance-{inst['id']}" / "workspace/ComfyUI/output"
        assert len(list(outputs.rglob(f"{job_id}*.mp4"))) == 1, sorted(outputs.rglob("*"))

        # No instance on "Vast" that the ledger (the server's store) does not know.
        labels_on_vast = {i["label"]: str(i["id"]) for i in procs.vast_instances(world)}
        known = {i.label: i for i in procs.ledger(data)}
        assert labels_on_vast and set(labels_on_vast) <= set(known)
        assert all(known[label].id == iid and known[label].alive for label, iid in labels_on_vast.items())
        listed = procs.run(
            ["instances", "list", "--json"],
            {
                **env,
                "VAST_API_URL": world["vast_api_url"],
                "VAST_API_KEY": world["vast_api_key"],
                "PROVIDER": "sim",
            },
        )
        assert listed.returncode == 0, listed.stderr[-3000:]
        report = json.loads(listed.stdout)
        assert report["orphans"] == [] and report["simulated"] is True
        assert {i["id"] for i in report["instances"]} == set(labels_on_vast.values())
