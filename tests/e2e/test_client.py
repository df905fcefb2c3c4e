"""The typed client (async and sync) and the CLI's --server mode against a real `comfyfleet serve`
subprocess, attached to a real `comfyfleet sim` world, with an API token set. One world and one server
for the module."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.client import AsyncComfyfleet, Comfyfleet, InvalidRequest, NotFound, Unauthorized
from tests.e2e import procs
from tests.e2e.conftest import free_port, png_bytes

TOKEN = "client-test-token-0123456789abcdef"
SMALL = {"num_frames": 9, "width": 256, "height": 256}


@dataclass
class Server:
    url: str
    data: Path
    env: dict[str, str]
    image: Path
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("client")
    data = root / "data"
    env = procs.sim_env(data, sim_step_delay_s=0.05, api_token=TOKEN)
    image = root / "start.png"
    image.write_bytes(png_bytes(320, 240))
    sim_log, serve_log = root / "sim.log", root / "serve.log"
    with procs.spawn(["sim"], env, sim_log) as sim:
        procs.wait_world(sim, data, sim_log)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with procs.spawn(["serve", "--port", str(port)], env, serve_log) as serve:
            procs.wait_http(f"{url}/readyz", serve, serve_log, within_s=60)
            yield Server(url, data, env, image, serve_log)


async def test_async_client_submits_follows_progress_and_downloads(server, tmp_path):
    events: list[dict] = []
    async with AsyncComfyfleet(server.url, token=TOKEN) as cf:
        job = await cf.submit(image=server.image, prompt="lighthouse", seed=3, **SMALL)
        assert job.state in ("queued", "acquiring") and job.job_id.startswith("job_")
        final = await cf.wait(job.job_id, timeout_s=120, on_progress=events.append)
        assert final.state == "succeeded", final.error
        assert final.result["seed"] == 3 and final.result["simulated"] is True
        assert events[0]["event"] == "snapshot" and events[-1]["event"] == "end"
        assert any(str(e.get("stage") or "").startswith("sampling") for e in events)

        out = await cf.download(final.result["video_url"], tmp_path / "v.mp4")
        assert out.stat().st_size == final.result["video_size_bytes"]
        assert (await cf.job(job.job_id)).state == "succeeded"
        assert job.job_id in [j.job_id for j in await cf.jobs(states=["succeeded"])]

        instances = await cf.instances()
        assert [i.id for i in instances] == [final.result["instance_id"]]
        detail = await cf.instance(instances[0].id)
        assert detail.provisioning and detail.provisioning[0].files_verified == 6
        report = await cf.verify(instances[0].id)
        assert report.ok and len(report.workflows[0].files) == 6
        spend = await cf.spend()
        assert spend.today_usd > 0 and spend.per_workflow[0].get("jobs_today", 0) >= 1


async def test_async_client_cancels_a_running_job(server):
    async with AsyncComfyfleet(server.url, token=TOKEN) as cf:
        job = await cf.submit(image=server.image, prompt="long one", steps=40, **SMALL)
        sampling = asyncio.Event()

        def watch(event: dict) -> None:
            if str(event.get("stage") or "").startswith("sampling"):
                sampling.set()

        follower = asyncio.create_task(cf.wait(job.job_id, timeout_s=120, on_progress=watch))
        await asyncio.wait_for(sampling.wait(), 60)
        cancelled = await cf.cancel(job.job_id)
        assert cancelled.state == "cancelled"
        assert (await follower).state == "cancelled"


async def test_async_client_story_uploads_a_local_image_and_follows_every_segment(server, tmp_path):
    progress: list[dict] = []
    async with AsyncComfyfleet(server.url, token=TOKEN) as cf:
        story = await cf.submit_story(
            image=server.image, segments=[{"prompt": "one"}, {"prompt": "two"}], seed=11, **SMALL
        )
        final = await cf.wait_story(story.story_id, timeout_s=120, on_progress=progress.append)
        assert final.state == "succeeded", final.error
        assert final.result["num_frames"] == 2 * 9 - 1
        assert {e.get("segment") for e in progress if e["event"] == "progress"} >= {1, 2}
        out = await cf.download(final.result["video_url"], tmp_path / "story.mp4")
        assert out.stat().st_size == final.result["video_size_bytes"]


async def test_async_client_batch_and_its_view(server):
    async with AsyncComfyfleet(server.url, token=TOKEN) as cf:
        view = await cf.submit_batch(
            [{"image": server.image, "prompt": f"b{i}", "seed": 100 + i, **SMALL} for i in range(3)]
        )
        assert view.total == 3
        final = await cf.wait_batch(view.batch_id, timeout_s=120, poll_s=0.2)
        assert final.state == "ended" and final.counts["succeeded"] == 3


async def test_async_client_raises_typed_errors_naming_the_field(server):
    async with AsyncComfyfleet(server.url, token="wrong") as bad:
        with pytest.raises(Unauthorized):
            await bad.jobs()
    async with AsyncComfyfleet(server.url, token=TOKEN) as cf:
        with pytest.raises(InvalidRequest) as err:
            await cf.submit(image=server.image, prompt="x", num_frames=10)
        assert err.value.fields == ["num_frames"] and err.value.status == 422
        with pytest.raises(InvalidRequest) as err:
            await cf.submit_batch(
                [{"image": server.image, "prompt": "ok"}, {"image": server.image, "prompt": ""}]
            )
        assert err.value.fields == ["requests[1].prompt"]
        with pytest.raises(NotFound):
            await cf.job("job_does_not_exist")


def test_sync_client_generates_and_reads_the_fleet(server, tmp_path):
    with Comfyfleet(server.url, token=TOKEN) as cf:
        job = cf.generate(image=server.image, prompt="sync", seed=21, timeout_s=120, **SMALL)
        assert job.state == "succeeded", job.error
        assert cf.download(job.result["video_url"], tmp_path / "s.mp4").stat().st_size > 0
        events = list(cf.events(f"/jobs/{job.job_id}/events"))
        assert [e["event"] for e in events] == ["snapshot", "end"]
        assert cf.instances()[0].state == "ready"


def _cli(
    server: Server, *args: str, token: bool = True, timeout_s: float = 120
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in server.env.items() if k != "API_TOKEN"}
    if token:
        env["COMFYFLEET_TOKEN"] = TOKEN  # not on the command line
    return procs.run(list(args), env, timeout_s=timeout_s)


def test_cli_generate_with_server_downloads_the_video_and_keeps_the_token_off_argv(server, tmp_path):
    out = tmp_path / "cli.mp4"
    done = _cli(
        server, "generate", "--server", server.url, "--image", str(server.image), "--prompt", "cli",
        "--frames", "9", "--width", "256", "--height", "256", "--seed", "5", "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0 and "SIMULATED" in done.stdout
    assert TOKEN not in done.stdout + done.stderr

    listed = _cli(server, "jobs", "list", "--server", server.url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"state": "succeeded"' in listed.stdout


def test_cli_story_and_verify_through_the_server(server, tmp_path):
    out = tmp_path / "story.mp4"
    done = _cli(
        server, "story", "--server", server.url, "--image", str(server.image),
        "--prompt", "a", "--prompt", "b", "--frames", "9", "--width", "256", "--height", "256",
        "--seed", "1", "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0 and "2 segments" in done.stdout

    fleet = _cli(server, "fleet", "list", "--server", server.url, "--json")
    assert fleet.returncode == 0, fleet.stderr
    instance_id = json.loads(fleet.stdout)[0]["id"]
    verified = _cli(server, "instances", "verify", instance_id, "--server", server.url)
    assert verified.returncode == 0, verified.stderr
    assert "all files verified" in verified.stdout


def test_cli_with_a_wrong_token_or_no_server_fails_with_a_message_not_a_traceback(server):
    done = _cli(server, "jobs", "list", "--server", server.url, token=False)
    assert done.returncode != 0 and "401" in done.stderr and "Traceback" not in done.stderr
    env = {k: v for k, v in server.env.items() if not k.startswith("COMFYFLEET")}
    done = procs.run(["jobs", "list"], env)
    assert done.returncode != 0 and "COMFYFLEET_SERVER" in done.stderr and "Traceback" not in done.stderr
    assert os.environ.get("COMFYFLEET_TOKEN") is None  # nothing leaked into this process
