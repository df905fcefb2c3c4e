"""The HF token: never on a command line, never printed, sent only to the Hub host, never to its CDN."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess
from pathlib import Path

import pytest

from app.config import PROVISIONING_DIR
from app.provision import NeedsHFToken, connect, run_provision

pytestmark = pytest.mark.sshd

SCRIPT = PROVISIONING_DIR / "provision.sh"


def new_token() -> str:
    return "hf_" + secrets.token_hex(16)


async def ps_args() -> str:
    proc = await asyncio.create_subprocess_exec("ps", "-ww", "-eo", "args", stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


def all_text_under(*roots: Path) -> str:
    chunks = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.stat().st_size < 1_000_000:
                chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)


async def test_token_absent_from_ps_and_script_output(model_server, make_plan, remote, tmp_path):
    token = new_token()
    name = "high.gguf"
    model_server.fault(name).require_token = token
    model_server.fault(name).slow_bps = 2e6  # ~1.5 s of transfer to look at `ps` during
    plan = await make_plan(mirror=False)
    plan_file = tmp_path / "plan.tsv"
    plan_file.write_text(plan.to_text())

    proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), str(plan_file), "--token-stdin",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdin.write(token.encode() + b"\n")
    await proc.stdin.drain()
    proc.stdin.close()
    communicate = asyncio.ensure_future(proc.communicate())
    snapshots = []
    while not communicate.done():
        snapshots.append(await ps_args())
        await asyncio.sleep(0.05)
    stdout, stderr = await communicate

    assert proc.returncode == 0, stderr.decode()
    during = [s for s in snapshots if "curl" in s and f"/cdn/unet/{name}" in s]
    assert during, "no ps snapshot was taken while the download ran"
    assert not any(token in s for s in snapshots)
    assert token not in stdout.decode() and token not in stderr.decode()
    assert token not in all_text_under(remote.comfy_dir, tmp_path)


async def test_token_goes_only_to_the_hub_host_not_its_cdn(model_server, make_plan, remote, monkeypatch):
    token = new_token()
    monkeypatch.setenv("HF_TOKEN", token)
    for f in model_server.files.values():
        model_server.fault(f.spec.name).require_token = token
    model_server.renamed_repos.add("acme/old-name")  # the Hub redirects within itself first
    plan = await make_plan(mirror=False)  # gated HF-style URLs, resolved with the token
    plan.models = [
        dataclasses.replace(m, url=m.url.replace(model_server.hf_repo, "acme/old-name")) for m in plan.models
    ]
    assert all(m.size_exact and m.sha256 for m in plan.models)

    events: list[dict] = []
    async with await connect(remote.target, remote.key_path) as conn:
        summary = await run_provision(conn, plan, events.append, hf_token=token, remote_dir=remote.remote_dir)

    assert len(summary.downloaded) == len(model_server.files)
    assert any(r.status == 307 and r.authorization for r in model_server.log)
    hub = [r for r in model_server.log if "/resolve/" in r.path and r.status != 307]
    cdn = [r for r in model_server.log if r.path.startswith("/cdn/")]
    assert hub and all(r.authorization and r.status == 302 for r in hub)
    assert cdn and not any(r.authorization for r in cdn)
    assert all(r.host.startswith("localhost:") for r in cdn)
    assert token not in repr(events) and token not in plan.lock_path.read_text()


async def test_gated_model_without_token_says_it_needs_one(model_server, make_plan, remote):
    model_server.fault("vae.safetensors").require_token = new_token()
    plan = await make_plan(mirror=False)
    async with await connect(remote.target, remote.key_path) as conn:
        with pytest.raises(NeedsHFToken) as exc:
            await run_provision(conn, plan, remote_dir=remote.remote_dir)
    assert exc.value.file == "vae.safetensors"
    assert "needs an HF token" in str(exc.value)
