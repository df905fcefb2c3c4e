"""Two real `comfyfleet serve` replicas on one PostgreSQL database and one simulated world
(`comfyfleet sim`): a replica SIGKILLed mid-sampling has its job finished by the other (re-attached, not run
again, nothing rented twice); two replicas racing for the last pool slot rent once; identical requests sent
to both replicas run on a GPU once.

Every wait is for a condition (a job's state or stage, a URL answering), never for time to pass."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e import procs
from tests.e2e.conftest import b64, free_port, png_bytes

TERMINAL = ("succeeded", "failed", "cancelled")
REPLICA_ENV = {
    "replicas": "on",
    "replica_lease_s": 3,
    "replica_heartbeat_s": 0.3,
    "replica_poll_s": 0.2,
}


@pytest.fixture
def pg(database):
    if database.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database")
    return database


def _poll(url: str, pred, within_s: float = 120.0) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        job = httpx.get(url, timeout=10).json()
        if pred(job):
            return job
        assert time.monotonic() < deadline, f"job stuck: {job}"
        time.sleep(0.05)


def _body(seed: int, steps: int = 8) -> dict:
    return {
        "image_base64": b64(png_bytes()),
        "prompt": "replicas",
        "num_frames": 9,
        "width": 256,
        "height": 256,
        "steps": steps,
        "seed": seed,
    }


def _submit(base: str, body: dict) -> str:
    r = httpx.post(f"{base}/vastai/generate-video", json=body, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def _videos(world: dict, job_id: str) -> list[Path]:
    return sorted(Path(world["instances_dir"]).rglob(f"workspace/ComfyUI/output/**/{job_id}*.mp4"))


class _Fleet:
    """A world and two serve replicas in `tmp_path`, all ended by the test."""

    def __init__(self, tmp_path: Path, stack, **env) -> None:
        self.data = tmp_path / "data"
        self.env = procs.sim_env(self.data, **REPLICA_ENV, **env)
        self.sim_log = tmp_path / "sim.log"
        self.sim = stack.enter_context(procs.spawn(["sim"], self.env, self.sim_log))
        self.world = procs.wait_world(self.sim, self.data, self.sim_log)
        self.bases, self.servers, self.logs = [], [], []
        for name in ("r1", "r2"):
            port, log = free_port(), tmp_path / f"serve-{name}.log"
            env_r = {**self.env, "REPLICA_ID": name, "PUBLIC_URL": f"http://127.0.0.1:{port}"}
            server = stack.enter_context(procs.spawn(["serve", "--port", str(port)], env_r, log))
            self.bases.append(f"http://127.0.0.1:{port}")
            self.servers.append(server)
            self.logs.append(log)
        for base, server, log in zip(self.bases, self.servers, self.logs, strict=True):
            procs.wait_http(f"{base}/readyz", server, log)

    def rented(self) -> int:
        """Instances ever recorded (every rental is written to the ledger before its create is sent)."""
        return len(procs.ledger(self.data))


def test_replica_sigkilled_mid_sampling_its_job_is_finished_by_the_other(pg, tmp_path):
    from contextlib import ExitStack

    with ExitStack() as stack:
        fleet = _Fleet(tmp_path, stack, sim_step_delay_s=0.4)
        a, b = fleet.bases
        job_id = _submit(a, _body(99))
        job = _poll(f"{a}/jobs/{job_id}", lambda j: str(j["stage"] or "").startswith("sampling"), 120)
        assert job["state"] == "running"

        os.killpg(fleet.servers[0].pid, signal.SIGKILL)  # no shutdown code runs
        fleet.servers[0].wait(10)

        job = _poll(f"{b}/jobs/{job_id}", lambda j: j["state"] in TERMINAL)
        assert job["state"] == "succeeded", (job, procs.tail(fleet.logs[1]))
        assert job["attempts"] == 0  # re-attached, not run again
        assert f"recovery: job {job_id} reattaching (taken over by replica r2)" in fleet.logs[1].read_text()
        assert len(_videos(fleet.world, job_id)) == 1  # the prompt ran on the GPU once
        [inst] = procs.vast_instances(fleet.world)
        assert job["result"]["instance_id"] == str(inst["id"])
        assert fleet.rented() == 1  # the survivor rented nothing
        video = httpx.get(job["result"]["video_url"], timeout=30)
        assert video.status_code == 200 and len(video.content) == job["result"]["video_size_bytes"]


def test_two_replicas_racing_for_the_last_pool_slot_rent_once(pg, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    with ExitStack() as stack:
        fleet = _Fleet(tmp_path, stack, pool_max_instances=1)
        with ThreadPoolExecutor(2) as pool:
            ids = list(pool.map(_submit, fleet.bases, [_body(1), _body(2)]))
        jobs = [
            _poll(f"{base}/jobs/{jid}", lambda j: j["state"] in TERMINAL)
            for base, jid in zip(fleet.bases, ids, strict=True)
        ]
        assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], jobs
        assert fleet.rented() == 1 and len(procs.vast_instances(fleet.world)) == 1
        assert jobs[0]["result"]["instance_id"] == jobs[1]["result"]["instance_id"]


def test_identical_requests_to_two_replicas_run_on_a_gpu_once(pg, tmp_path):
    from contextlib import ExitStack

    with ExitStack() as stack:
        fleet = _Fleet(tmp_path, stack, sim_step_delay_s=0.3)
        a, b = fleet.bases
        lead = _submit(a, _body(5, steps=12))
        _poll(f"{a}/jobs/{lead}", lambda j: str(j["stage"] or "").startswith("sampling"), 120)
        follower = _submit(b, _body(5, steps=12))
        ended = [
            _poll(f"{base}/jobs/{jid}", lambda j: j["state"] in TERMINAL)
            for base, jid in ((a, lead), (b, follower))
        ]
        assert [j["state"] for j in ended] == ["succeeded", "succeeded"], ended
        assert ended[0]["result"]["cached"] is False and ended[1]["result"]["cached"] is True
        assert len(_videos(fleet.world, lead)) == 1 and _videos(fleet.world, follower) == []
        assert ended[1]["finished_at"] >= ended[0]["finished_at"]
