"""End-to-end provisioning over SSH: the script on the "instance", the control plane reading its events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import subprocess

import pytest

from app.provision import (
    ComfyRestartFailed,
    DiskFull,
    DownloadFailed,
    NodeInstallFailed,
    VerificationFailed,
    connect,
    run_provision,
)
from app.sim.sshserver import install_restart_hook

pytestmark = pytest.mark.sshd


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_head(path) -> str:
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


async def provision(remote, plan, **kw):
    events: list[dict] = []
    async with await connect(remote.target, remote.key_path) as conn:
        summary = await run_provision(conn, plan, events.append, remote_dir=remote.remote_dir, **kw)
    return summary, events


@pytest.mark.parametrize("remote", ["sshd", "sandbox"], indirect=True)
async def test_fresh_provision_installs_verified_models_and_pinned_nodes(
    remote, make_plan, model_server, node_repos
):
    model_server.fault("high.gguf").slow_bps = 6e6  # ~0.5 s, so progress lines are emitted
    plan = await make_plan()
    summary, events = await provision(remote, plan)

    models = remote.comfy_dir / "models"
    for served in model_server.files.values():
        path = models / served.spec.folder / served.spec.name
        assert sha256(path) == served.sha256
        sidecar = (path.parent / f".{served.spec.name}.verified").read_text()
        assert f"sha256={served.sha256}" in sidecar and f"size={served.size}" in sidecar
    assert not list(models.rglob("*.part"))
    assert sorted(summary.downloaded) == sorted(f.spec.name for f in model_server.files.values())
    assert summary.bytes_downloaded == sum(f.size for f in model_server.files.values())
    progress = [e for e in events if e["event"] == "progress" and e["file"] == "high.gguf"]
    assert progress and all(e["bytes"] <= e["total"] for e in progress)
    assert any(e["bytes"] > 0 and e["rate"] > 0 for e in progress)
    assert events[-1]["event"] == "summary" and events[-1]["ok"] is True

    nodes = remote.comfy_dir / "custom_nodes"
    assert git_head(nodes / "ComfyUI-GGUF") == node_repos["ComfyUI-GGUF"].commits[0]
    assert git_head(nodes / "ComfyUI-VideoHelperSuite") == node_repos["ComfyUI-VideoHelperSuite"].head
    # pip ran for the node with real requirement lines only, with ComfyUI's Python.
    assert remote.pip_log.read_text().count("-m pip install") == 1
    assert "ComfyUI-GGUF/requirements.txt" in remote.pip_log.read_text()
    assert summary.restarted and remote.restart_log.read_text() == "restarted\n"


async def test_reprovision_skips_everything_and_says_so(remote, make_plan, model_server):
    plan = await make_plan()
    await provision(remote, plan)
    model_server.log.clear()

    summary, events = await provision(remote, plan)

    assert summary.all_skipped and not summary.downloaded and not summary.restarted
    assert sorted(summary.skipped) == sorted(f.spec.name for f in model_server.files.values())
    assert sorted(summary.nodes_skipped) == ["ComfyUI-GGUF", "ComfyUI-VideoHelperSuite"]
    assert model_server.log == []  # not even a HEAD
    assert remote.restart_log.read_text() == "restarted\n"  # only the first run restarted
    assert {e["reason"] for e in events if e["event"] == "skipped"} == {"verified"}


async def test_resume_after_dropped_connection_continues_from_the_byte_reached(
    remote, make_plan, model_server
):
    fault = model_server.fault("high.gguf")
    fault.drop_at, fault.drop_times = 1_234_567, 1
    summary, events = await provision(remote, await make_plan())

    gets = model_server.requests_for("high.gguf")
    assert [g.range for g in gets] == [None, "bytes=1234567-"]
    assert gets[0].bytes_sent == 1_234_567 and gets[1].start == 1_234_567
    assert "high.gguf" in summary.downloaded
    assert sha256(remote.comfy_dir / "models/unet/high.gguf") == model_server.file("high.gguf").sha256
    assert any(e["event"] == "retry" and e["offset"] == 1_234_567 for e in events)


async def test_corrupt_download_is_fetched_again(remote, make_plan, model_server):
    model_server.fault("umt5.safetensors").corrupt_times = 1
    _, events = await provision(remote, await make_plan())

    assert len(model_server.requests_for("umt5.safetensors")) == 2
    assert (
        sha256(remote.comfy_dir / "models/text_encoders/umt5.safetensors")
        == model_server.file("umt5.safetensors").sha256
    )
    assert any(e["event"] == "retry" and "sha256 mismatch" in e["reason"] for e in events)


async def test_persistent_corruption_names_the_file_and_leaves_no_final_file(remote, make_plan, model_server):
    model_server.fault("low.gguf").corrupt_times = -1
    with pytest.raises(VerificationFailed) as exc:
        await provision(remote, await make_plan())

    assert exc.value.file == "low.gguf" and "low.gguf" in str(exc.value)
    unet = remote.comfy_dir / "models/unet"
    assert not (unet / "low.gguf").exists() and not (unet / "low.gguf.part").exists()
    assert (unet / "high.gguf").exists()  # the other downloads still completed


async def test_corrupted_file_on_disk_without_sidecar_is_replaced(remote, make_plan, model_server):
    plan = await make_plan()
    await provision(remote, plan)
    path = remote.comfy_dir / "models/vae/vae.safetensors"
    (path.parent / ".vae.safetensors.verified").unlink()
    path.write_bytes(b"\0" * path.stat().st_size)  # same size, garbage: e.g. an interrupted copy

    summary, events = await provision(remote, plan)

    assert summary.downloaded == ["vae.safetensors"]
    assert any(e["event"] == "invalid" and e["file"] == "vae.safetensors" for e in events)
    assert sha256(path) == model_server.file("vae.safetensors").sha256


async def test_not_enough_disk_fails_before_downloading(remote, make_plan, model_server):
    with pytest.raises(DiskFull) as exc:
        await provision(remote, await make_plan(min_free_bytes=1 << 60))
    assert "not enough disk" in str(exc.value)
    assert [r for r in model_server.log if r.method == "GET"] == []


async def test_missing_model_is_a_permanent_download_failure(remote, make_plan, model_server):
    plan = await make_plan()
    model_server.fault("vae.safetensors").status, model_server.fault("vae.safetensors").status_times = 404, -1
    with pytest.raises(DownloadFailed) as exc:
        await provision(remote, plan)
    assert exc.value.file == "vae.safetensors" and not exc.value.retryable


async def test_server_errors_are_retried_with_backoff(remote, make_plan, model_server):
    plan = await make_plan()
    fault = model_server.fault("vae.safetensors")
    fault.status, fault.status_times = 503, 2
    summary, _ = await provision(remote, plan)
    assert "vae.safetensors" in summary.downloaded
    assert [r.status for r in model_server.requests_for("vae.safetensors")] == [503, 503, 200]


async def test_failed_node_requirements_name_the_node(remote, make_plan):
    with pytest.raises(NodeInstallFailed) as exc:
        await provision(remote, await make_plan(pip_rc=1))
    assert exc.value.node == "ComfyUI-GGUF"
    assert "pip install" in str(exc.value)


async def test_node_at_another_commit_is_moved_to_the_pinned_one(remote, make_plan, node_repos):
    plan = await make_plan()
    await provision(remote, plan)
    node_dir = remote.comfy_dir / "custom_nodes/ComfyUI-GGUF"
    checkout = await asyncio.create_subprocess_exec(
        "git", "-C", str(node_dir), "checkout", "-q", node_repos["ComfyUI-GGUF"].head
    )
    assert await checkout.wait() == 0

    summary, _ = await provision(remote, plan)

    assert summary.nodes_installed == ["ComfyUI-GGUF"] and summary.restarted
    assert git_head(node_dir) == node_repos["ComfyUI-GGUF"].commits[0]


async def test_lock_file_records_what_was_downloaded(remote, make_plan, model_server):
    plan = await make_plan()
    await provision(remote, plan)
    lock = json.loads(plan.lock_path.read_text())["files"]
    assert lock["unet/low.gguf"]["sha256"] == model_server.file("low.gguf").sha256
    assert lock["unet/low.gguf"]["size"] == model_server.file("low.gguf").size


async def test_cancelled_provision_stops_the_remote_downloads(remote, make_plan, model_server):
    model_server.fault("high.gguf").slow_bps = 0.3e6  # ~10 s, far longer than the wait below
    plan = await make_plan()
    started = asyncio.Event()

    def on_event(event: dict) -> None:
        if event["event"] == "progress" and event["file"] == "high.gguf":
            started.set()

    async with await connect(remote.target, remote.key_path) as conn:
        task = asyncio.create_task(run_provision(conn, plan, on_event, remote_dir=remote.remote_dir))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    # The cancel returns only once the remote run is gone: no wait, no poll.
    assert not _processes_mentioning(str(remote.comfy_dir / "models")), (
        "remote download processes outlived the cancelled provision"
    )
    assert not (remote.comfy_dir / "models/unet/high.gguf").exists()


def _processes_mentioning(marker: str) -> list[str]:
    """Live processes whose command line holds `marker` (zombies show as `[name] <defunct>`)."""
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line]


async def test_cancel_after_the_channel_closed_still_stops_every_remote_download(
    remote, make_plan, model_server
):
    """The race behind the flaky cancel: on a loaded machine the channel closes before the script's TERM
    trap runs, and the trap's log line into the closed pipe killed it (SIGPIPE) before it stopped curl.
    Here the channel is closed first, on purpose; the stop must still leave nothing running."""
    from app.provision.runner import _stop_remote, upload

    model_server.fault("high.gguf").slow_bps = 0.3e6
    plan = await make_plan()
    async with await connect(remote.target, remote.key_path) as conn:
        script, plan_path = await upload(conn, plan, remote.remote_dir)
        proc = await conn.create_process(f"bash --norc {script} {plan_path}", encoding="utf-8")
        proc.stdin.write_eof()
        pid = pgid = None
        async with asyncio.timeout(10):
            async for line in proc.stdout:
                event = json.loads(line)
                if event["event"] == "begin":
                    pid, pgid = event["pid"], event["pgid"]
                if event["event"] == "progress" and event["file"] == "high.gguf":
                    break
        assert pid and _processes_mentioning(str(remote.comfy_dir / "models"))
        proc.close()
        await proc.wait_closed()
        await _stop_remote(conn, pid, pgid)
    assert not _processes_mentioning(str(remote.comfy_dir / "models"))
    assert not _processes_mentioning(script)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs: smaller than the models, to fill up for real mid-download."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_disk_filling_up_mid_download_is_disk_full(remote, make_plan, model_server, tiny_disk):
    plan = await make_plan(comfy_dir=str(tiny_disk / "ComfyUI"), parallel=1)
    # Sizes only approximate (and too small), so the up-front check passes and the disk really fills up.
    plan.models = [dataclasses.replace(m, size=1000, size_exact=False, sha256=None) for m in plan.models]
    plan.nodes = []
    with pytest.raises(DiskFull) as exc:
        await provision(remote, plan)
    assert exc.value.file == "high.gguf" and "disk full while downloading" in str(exc.value)
    assert not (tiny_disk / "ComfyUI/models/unet/high.gguf").exists()


async def test_comfyui_not_coming_back_after_restart_is_reported(remote, make_plan, unused_tcp_port):
    plan = await make_plan(comfy_url=f"http://127.0.0.1:{unused_tcp_port}/", restart_timeout_s=1)
    plan.models = []
    with pytest.raises(ComfyRestartFailed) as exc:
        await provision(remote, plan)
    assert "did not answer" in str(exc.value) and exc.value.retryable


async def test_machine_restart_hook_is_used_when_nodes_change(remote, make_plan):
    install_restart_hook(remote.comfy_dir, f"echo hook >> {remote.restart_log}")
    plan = await make_plan(restart_cmd="auto", comfy_url="http://127.0.0.1:9/")  # the hook does the waiting
    plan.models = []
    summary, events = await provision(remote, plan)
    assert summary.restarted and remote.restart_log.read_text() == "hook\n"
    assert not any(e["event"] == "comfy_ready" for e in events)


async def test_comfyui_started_by_restart_does_not_hold_the_provision_lock(remote, make_plan, tmp_path):
    # A restart command that leaves a long-running process behind (as starting ComfyUI directly does).
    pid_file = tmp_path / "background.pid"
    plan = await make_plan(restart_cmd=f"sleep 30 >/dev/null 2>&1 & echo $! > {pid_file}", comfy_url=None)
    plan.models = []
    try:
        first, _ = await provision(remote, plan)
        second, _ = await provision(remote, plan)  # would be ProvisionBusy if the sleep held the lock fd
        assert first.restarted and second.all_skipped
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
