"""Segmented downloads: one file over several connections, resumable per segment, verified as a whole."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import secrets
import subprocess

import pytest

from app.config import PROVISIONING_DIR
from app.provision import VerificationFailed, connect, run_provision

pytestmark = pytest.mark.sshd

SEG = 512 * 1024  # high.gguf (3 MiB) = 6 segments


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def provision(remote, plan, **kw):
    events: list[dict] = []
    async with await connect(remote.target, remote.key_path) as conn:
        summary = await run_provision(conn, plan, events.append, remote_dir=remote.remote_dir, **kw)
    return summary, events


async def segmented_plan(make_plan, *names: str, **overrides):
    """A plan for `names` only (all files when none), segments of SEG bytes, 4 connections per file."""
    settings = dict(segment_bytes=SEG, connections=4, max_connections=16)
    settings.update(overrides)
    plan = await make_plan(**settings)
    plan.nodes = []
    if names:
        plan.models = [m for m in plan.models if m.name in names]
    return plan


async def ps_args() -> str:
    proc = await asyncio.create_subprocess_exec("ps", "-ww", "-eo", "args", stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


def ranges(server, name) -> list[str | None]:
    return [r.range for r in server.requests_for(name)]


@pytest.mark.parametrize("remote", ["sshd", "sandbox"], indirect=True)
async def test_large_file_is_fetched_over_several_connections_and_verified(remote, make_plan, model_server):
    model_server.fault("high.gguf").slow_bps = 2e6  # long enough for the connections to overlap
    plan = await segmented_plan(make_plan)
    summary, events = await provision(remote, plan)

    served = model_server.file("high.gguf")
    path = remote.comfy_dir / "models/unet/high.gguf"
    assert sha256(path) == served.sha256
    assert not list((remote.comfy_dir / "models").rglob("*.part*"))  # no .part, no pieces left
    expected = [f"bytes={s}-{min(s + SEG, served.size) - 1}" for s in range(0, served.size, SEG)]
    assert sorted(ranges(model_server, "high.gguf"), key=lambda r: int(r[6:].split("-")[0])) == expected
    assert model_server.peak_active >= 4
    done = next(e for e in events if e["event"] == "done" and e["file"] == "high.gguf")
    assert done["connections"] == 4 and done["sha256"] == served.sha256
    # A file smaller than one segment still uses one plain connection.
    assert ranges(model_server, "vae.safetensors") == [None]
    assert sorted(summary.downloaded) == sorted(f.spec.name for f in model_server.files.values())


async def test_drop_in_the_middle_of_a_segment_resumes_that_segment_from_the_byte_reached(
    remote, make_plan, model_server
):
    fault = model_server.fault("high.gguf")
    fault.drop_at, fault.drop_times = 1_234_567, 1  # inside segment 2 (1048576-1572863)
    summary, events = await provision(remote, await segmented_plan(make_plan, "high.gguf"))

    got = ranges(model_server, "high.gguf")
    assert got.count("bytes=1048576-1572863") == 1
    assert "bytes=1234567-1572863" in got  # only the rest of that segment, once
    assert len(got) == len(set(got)) == 7  # six segments + the resumed rest; nothing fetched twice
    resumed = next(r for r in model_server.requests_for("high.gguf") if r.range == "bytes=1234567-1572863")
    assert resumed.start == 1_234_567
    assert any(e["event"] == "retry" and e["offset"] == 1_234_567 for e in events)
    assert sha256(remote.comfy_dir / "models/unet/high.gguf") == model_server.file("high.gguf").sha256
    assert summary.downloaded == ["high.gguf"]


async def test_corrupt_segment_fails_verification_and_the_file_is_fetched_again(
    remote, make_plan, model_server
):
    model_server.fault("high.gguf").corrupt_times = 1  # one flipped byte in the segment holding the middle
    summary, events = await provision(remote, await segmented_plan(make_plan, "high.gguf"))

    got = ranges(model_server, "high.gguf")
    assert len(got) == 12 and len(set(got)) == 6  # every segment twice: the hash covers the whole file
    assert any(e["event"] == "retry" and "sha256 mismatch" in e["reason"] for e in events)
    assert sha256(remote.comfy_dir / "models/unet/high.gguf") == model_server.file("high.gguf").sha256
    assert summary.downloaded == ["high.gguf"]


async def test_corrupt_segment_every_time_is_a_verification_failure_with_nothing_left(
    remote, make_plan, model_server
):
    model_server.fault("high.gguf").corrupt_times = -1
    with pytest.raises(VerificationFailed) as exc:
        await provision(remote, await segmented_plan(make_plan, "high.gguf"))
    assert exc.value.file == "high.gguf"
    unet = remote.comfy_dir / "models/unet"
    assert not list(unet.glob("high.gguf*"))


async def test_server_ignoring_range_falls_back_to_one_connection(remote, make_plan, model_server):
    model_server.fault("high.gguf").ignore_range = True  # answers 200 + the whole file to every Range
    summary, events = await provision(remote, await segmented_plan(make_plan, "high.gguf"))

    gets = model_server.requests_for("high.gguf")
    whole = [g for g in gets if g.range is None]
    assert len(whole) == 1 and whole[0].bytes_sent == model_server.file("high.gguf").size
    assert all(g.status == 200 for g in gets)
    assert not list((remote.comfy_dir / "models/unet").glob("high.gguf.part*"))
    assert any(e["event"] == "retry" and "ignores Range" in e["reason"] for e in events)
    done = next(e for e in events if e["event"] == "done")
    assert done["connections"] == 1
    assert sha256(remote.comfy_dir / "models/unet/high.gguf") == model_server.file("high.gguf").sha256
    assert summary.downloaded == ["high.gguf"]


async def test_interrupted_run_keeps_its_complete_segments_and_fetches_only_the_rest(
    remote, make_plan, model_server
):
    model_server.fault("high.gguf").slow_bps = 0.2e6  # a segment takes ~2.6 s, the file ~8 s
    plan = await segmented_plan(make_plan, "high.gguf", connections=2)
    unet = remote.comfy_dir / "models/unet"
    async with await connect(remote.target, remote.key_path) as conn:
        task = asyncio.create_task(run_provision(conn, plan, remote_dir=remote.remote_dir))
        deadline = asyncio.get_running_loop().time() + 60
        while not (unet / "high.gguf.part").exists() or (unet / "high.gguf.part").stat().st_size < 2 * SEG:
            assert asyncio.get_running_loop().time() < deadline, "the first two segments never arrived"
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    first = set(ranges(model_server, "high.gguf"))
    kept = (unet / "high.gguf.part").stat().st_size
    assert kept >= 2 * SEG
    model_server.log.clear()
    model_server.fault("high.gguf").slow_bps = None

    summary, _ = await provision(remote, plan)

    again = ranges(model_server, "high.gguf")
    starts = [int(r[6:].split("-")[0]) for r in again]
    assert min(starts) >= kept  # nothing before the bytes already kept was fetched again
    assert not any(r in first and int(r[6:].split("-")[0]) < kept for r in again)
    assert sha256(unet / "high.gguf") == model_server.file("high.gguf").sha256
    assert summary.downloaded == ["high.gguf"]


async def test_connection_budget_caps_connections_across_files(remote, make_plan, model_server):
    for name in ("high.gguf", "low.gguf", "umt5.safetensors"):
        model_server.fault(name).slow_bps = 2e6
    plan = await segmented_plan(make_plan, "high.gguf", "low.gguf", "umt5.safetensors", max_connections=3)
    summary, _ = await provision(remote, plan)

    assert model_server.peak_active <= 3
    assert sorted(summary.downloaded) == ["high.gguf", "low.gguf", "umt5.safetensors"]
    for name in summary.downloaded:
        f = model_server.file(name)
        assert sha256(remote.comfy_dir / "models" / f.spec.folder / name) == f.sha256


async def test_primary_source_failing_falls_back_to_the_fallback_url(remote, make_plan, model_server):
    plan = await segmented_plan(make_plan, "high.gguf", "vae.safetensors")
    plan.models = [
        dataclasses.replace(m, url=f"{model_server.url}/gone/{m.name}", fallback_url=m.url)
        for m in plan.models
    ]
    summary, events = await provision(remote, plan)

    fallbacks = {e["file"]: e for e in events if e["event"] == "fallback"}
    assert set(fallbacks) == {"high.gguf", "vae.safetensors"}
    assert "not found" in fallbacks["high.gguf"]["reason"]
    assert not any(e["event"] == "error" for e in events)
    assert sorted(summary.downloaded) == ["high.gguf", "vae.safetensors"]
    for name in summary.downloaded:
        f = model_server.file(name)
        path = remote.comfy_dir / "models" / f.spec.folder / name
        assert sha256(path) == f.sha256
        assert "/gone/" not in (path.parent / f".{name}.verified").read_text()  # records the fallback


async def test_signed_url_stays_out_of_ps_and_the_instance_disk(remote, make_plan, model_server):
    signature = secrets.token_hex(16)
    for name in ("high.gguf", "vae.safetensors"):  # segmented and single-connection
        model_server.fault(name).slow_bps = 1.5e6
    plan = await segmented_plan(make_plan, "high.gguf", "vae.safetensors")
    plan.models = [dataclasses.replace(m, url=f"{m.url}?X-Amz-Signature={signature}") for m in plan.models]
    task = asyncio.create_task(provision(remote, plan))
    snapshots = []
    while not task.done():
        snapshots.append(await ps_args())
        await asyncio.sleep(0.05)
    summary, events = await task

    assert sorted(summary.downloaded) == ["high.gguf", "vae.safetensors"]
    assert any("comfyfleet-provision/1" in s for s in snapshots), "no ps snapshot during the downloads"
    assert not any(signature in s for s in snapshots)
    assert signature not in repr(events)
    for path in remote.comfy_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 100_000:
            assert signature not in path.read_text(errors="replace"), path


async def test_segmented_download_sends_the_token_to_the_hub_only_and_never_in_argv(
    remote, make_plan, model_server, monkeypatch
):
    token = "hf_" + secrets.token_hex(16)
    monkeypatch.setenv("HF_TOKEN", token)  # so the plan resolves the gated file's exact size
    model_server.fault("high.gguf").require_token = token
    model_server.fault("high.gguf").slow_bps = 1.5e6
    plan = await segmented_plan(make_plan, "high.gguf", mirror=False)  # the gated HF-style URL
    async with await connect(remote.target, remote.key_path) as conn:
        task = asyncio.create_task(run_provision(conn, plan, hf_token=token, remote_dir=remote.remote_dir))
        snapshots = []
        while not task.done():
            snapshots.append(await ps_args())
            await asyncio.sleep(0.05)
        summary = await task

    assert summary.downloaded == ["high.gguf"]
    assert not any(token in s for s in snapshots)
    hub = [r for r in model_server.log if "/resolve/" in r.path]
    cdn = [r for r in model_server.log if r.path.startswith("/cdn/") and r.method == "GET"]
    assert hub and all(r.authorization for r in hub)
    assert len(cdn) == 6 and all(r.range and not r.authorization for r in cdn)
    # The segments go straight to the CDN: the Hub saw one HEAD from the plan and one from the script.
    assert [r.method for r in hub if r.path.endswith("/high.gguf")] == ["HEAD", "HEAD"]


async def test_without_curl_a_large_file_comes_over_one_connection_with_wget(
    make_plan, model_server, tmp_path
):
    plan = await segmented_plan(make_plan, "high.gguf")
    plan_file = tmp_path / "plan.tsv"
    plan_file.write_text(plan.to_text() + "set\ttool\twget\n")
    proc = await asyncio.create_subprocess_exec(
        "bash", str(PROVISIONING_DIR / "provision.sh"), str(plan_file),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    done = next(e for e in map(json.loads, stdout.decode().splitlines()) if e["event"] == "done")
    assert done["connections"] == 1 and done["sha256"] == model_server.file("high.gguf").sha256
    assert ranges(model_server, "high.gguf") == [None]
