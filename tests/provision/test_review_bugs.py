"""Regression tests for provisioning bugs found in review (each named after the failure it prevents)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from app.config import PROVISIONING_DIR
from app.provision import (
    DiskFull,
    DownloadFailed,
    MissingTool,
    ProvisionTimeout,
    VerificationFailed,
    connect,
    run_provision,
)
from app.provision.runner import _error_for
from app.sim.modelserver import FileSpec
from app.sim.sshserver import install_restart_hook
from tests.provision.conftest import FakeModel

pytestmark = pytest.mark.sshd
SCRIPT = PROVISIONING_DIR / "provision.sh"


async def provision(remote, plan, **kw):
    events: list[dict] = []
    async with await connect(remote.target, remote.key_path) as conn:
        summary = await run_provision(conn, plan, events.append, remote_dir=remote.remote_dir, **kw)
    return summary, events


async def test_source_larger_than_planned_size_fails_verification_instead_of_looping(
    remote, make_plan, model_server
):
    # The plan's exact size (e.g. from the lock file) is smaller than what the server now serves: each
    # transfer overshoots, the .part is deleted as "too big" and fetched again, forever.
    plan = await make_plan()
    plan.nodes = []
    plan.models = [
        dataclasses.replace(m, size=m.size - 1000, sha256=None) if m.name == "vae.safetensors" else m
        for m in plan.models
    ]
    with pytest.raises(VerificationFailed) as exc:
        await asyncio.wait_for(provision(remote, plan), 30)
    assert exc.value.file == "vae.safetensors" and "size" in str(exc.value)
    assert len(model_server.requests_for("vae.safetensors")) == 2  # fetched once more, then an error
    vae = remote.comfy_dir / "models/vae"
    assert not (vae / "vae.safetensors").exists() and not (vae / "vae.safetensors.part").exists()


async def test_token_not_sent_to_host_hidden_behind_a_url_fragment(remote, make_plan, unused_tcp_port):
    # `http://localhost:P#@127.0.0.1/...` is a request to localhost; the script must not read the host
    # as 127.0.0.1 (the token host here) because of the `@` in the fragment.
    seen: list[str | None] = []

    async def anything(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        plan = await make_plan(mirror=False)
        plan.nodes = []
        plan.models = [
            dataclasses.replace(m, url=f"http://localhost:{unused_tcp_port}#@127.0.0.1/x/{m.name}")
            for m in plan.models[:1]
        ]
        with pytest.raises(DownloadFailed):
            await provision(remote, plan, hf_token="hf_" + "ab" * 16)
    finally:
        await runner.cleanup()
    assert seen and not any(seen)


async def test_restart_hook_in_a_comfy_dir_with_shell_characters_runs_and_executes_nothing(
    remote, make_plan, tmp_path
):
    comfy_dir = tmp_path / 'Comfy $(touch INJECTED) "q" `x`'
    install_restart_hook(comfy_dir, f"echo hook >> {remote.restart_log}")
    plan = await make_plan(comfy_dir=str(comfy_dir), restart_cmd="auto", comfy_url=None)
    plan.models = []
    summary, _ = await provision(remote, plan)
    assert summary.restarted and remote.restart_log.read_text() == "hook\n"
    assert not list(tmp_path.rglob("INJECTED")) and not list(comfy_dir.parent.parent.rglob("INJECTED"))


@pytest.mark.parametrize(
    ("fault", "exit_code", "kind"), [("404", 11, "not_found"), ("401", 13, "needs_hf_token")]
)
async def test_wget_http_errors_map_to_their_typed_exit_codes(
    make_plan, model_server, tmp_path, fault, exit_code, kind
):
    # With wget (no curl on the machine) every HTTP error used to look like a retryable 500: a 404 was
    # retried until the budget ran out and a gated model never said it needs an HF token.
    name = "vae.safetensors"
    if fault == "404":
        model_server.fault(name).status, model_server.fault(name).status_times = 404, -1
        plan = await make_plan()
    else:
        model_server.fault(name).require_token = "hf_" + "cd" * 16
        plan = await make_plan(mirror=False)
    plan.nodes = []
    plan.models = [m for m in plan.models if m.name == name]
    plan_file = tmp_path / "plan.tsv"
    plan_file.write_text(plan.to_text() + "set\ttool\twget\n")
    proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), str(plan_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    assert proc.returncode == exit_code, stderr.decode()
    error = next(e for e in events if e["event"] == "error")
    assert error["file"] == name and error["kind"] == kind and error["retryable"] is False
    assert not any(e["event"] == "retry" for e in events)


async def test_model_with_quote_in_folder_and_control_char_in_name_is_named_in_its_error(
    remote, make_plan, unused_tcp_port
):
    # The folder went into the JSON events unescaped and names with control characters were rejected
    # by the strict JSON parser: the error events were dropped and the failure named no file.
    plan = await make_plan()
    plan.nodes = []
    name = "odd\x1bname.gguf"
    plan.models = [
        dataclasses.replace(
            plan.models[0], folder='we"ird', name=name, url=f"http://127.0.0.1:{unused_tcp_port}/x.gguf"
        )
    ]
    events: list[dict] = []
    with pytest.raises(DownloadFailed) as exc:
        async with await connect(remote.target, remote.key_path) as conn:
            await run_provision(conn, plan, events.append, remote_dir=remote.remote_dir)
    assert exc.value.file == name
    assert any(e["event"] == "start" and e["folder"] == 'we"ird' for e in events)


async def test_hanging_script_upload_is_bounded_by_the_provision_timeout(make_plan):
    # The SFTP upload ran outside `timeout_s`: an SFTP subsystem that never answers hung the job forever.
    class HangingSFTP:
        async def __aenter__(self):
            await asyncio.Event().wait()

        async def __aexit__(self, *exc):
            return False

    class Conn:
        def start_sftp_client(self):
            return HangingSFTP()

    plan = await make_plan()
    with pytest.raises(ProvisionTimeout):
        await asyncio.wait_for(run_provision(Conn(), plan, timeout_s=0.5), 10)


async def test_connection_is_closed_when_pinning_the_new_host_key_fails(remote, monkeypatch):
    # If recording the first-contact host key fails (e.g. the ledger write), the connection must not be
    # left open (and unpinned) behind the error.
    import asyncssh

    opened: list = []
    real_connect = asyncssh.connect

    async def spy(*args, **kwargs):
        conn = await real_connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(asyncssh, "connect", spy)

    def pin(_line: str) -> None:
        raise RuntimeError("ledger unavailable")

    unpinned = dataclasses.replace(remote.target, host_key=None)
    with pytest.raises(RuntimeError):
        await connect(unpinned, remote.key_path, on_new_host_key=pin)
    assert len(opened) == 1
    await asyncio.wait_for(opened[0].wait_closed(), 5)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, for a model folder that lives on another filesystem than models/."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_disk_check_counts_a_model_folder_on_another_filesystem(
    remote, make_plan, model_server, small_disk
):
    # A model folder symlinked to another (smaller) disk: the up-front check only looked at models/.
    (remote.comfy_dir / "models").mkdir(parents=True)
    (remote.comfy_dir / "models/text_encoders").symlink_to(small_disk)
    plan = await make_plan()
    plan.nodes = []
    with pytest.raises(DiskFull) as exc:
        await provision(remote, plan)
    assert "not enough disk" in str(exc.value) and "text_encoders" in str(exc.value)
    assert [r for r in model_server.log if r.method == "GET"] == []


async def test_mirror_url_of_a_file_name_with_space_and_hash_fetches_that_file(
    remote, make_plan, model_server, workflow
):
    # `<mirror>/<folder>/<name>` was not percent-encoded: "#" cut the name (a 404 or another file),
    # a space made an invalid URL.
    served = model_server.add(FileSpec("loras", "my lora #2.safetensors", 100_000))
    workflow.models = [FakeModel(served.spec.name, "loras", "https://example.invalid/x", 100_000)]
    workflow.custom_nodes = []
    plan = await make_plan()
    assert plan.models[0].size_exact and plan.models[0].sha256 == served.sha256
    summary, _ = await provision(remote, plan)
    assert summary.downloaded == [served.spec.name]
    path = remote.comfy_dir / "models/loras" / served.spec.name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == served.sha256


async def test_model_in_a_nested_folder_allowed_by_the_manifest_is_provisioned(
    remote, make_plan, model_server, workflow
):
    # Manifests allow "loras/wan"-style folders (ComfyUI lists model folders recursively); the script
    # refused them as a bad plan (exit 2).
    workflow.models = [
        FakeModel("vae.safetensors", "vae/wan 2.1", model_server.mirror_url("vae.safetensors"), None)
    ]
    workflow.custom_nodes = []
    plan = await make_plan(mirror=False)
    summary, _ = await provision(remote, plan)
    assert summary.downloaded == ["vae.safetensors"]
    path = remote.comfy_dir / "models/vae/wan 2.1/vae.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == model_server.file("vae.safetensors").sha256
    assert (path.parent / ".vae.safetensors.verified").exists()
    again, _ = await provision(remote, plan)
    assert again.skipped == ["vae.safetensors"]


@pytest.mark.parametrize("tool", ["curl", "wget"])
async def test_resume_against_a_server_ignoring_range_starts_over_with_the_right_hash(
    make_plan, model_server, tmp_path, tool
):
    # A server that answers 200 (whole file) to a Range request: the partial file must not get the whole
    # body appended, and the sha256 reported (and pinned in the lock file) must be that of the final file.
    # curl refuses the 200 (exit 33) and starts over; wget skips the bytes it already has.
    name = "high.gguf"
    fault = model_server.fault(name)
    fault.drop_at, fault.drop_times, fault.ignore_range = 1_000_000, 1, True
    plan = await make_plan()
    plan.nodes = []
    plan.models = [dataclasses.replace(m, sha256=None) for m in plan.models if m.name == name]
    assert plan.models[0].size_exact
    plan_file = tmp_path / "plan.tsv"
    plan_file.write_text(plan.to_text() + f"set\ttool\t{tool}\n")
    proc = await asyncio.create_subprocess_exec(
        "bash", str(SCRIPT), str(plan_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    done = next(e for e in events if e["event"] == "done")
    served = model_server.file(name)
    path = plan.comfy_dir + f"/models/unet/{name}"
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == served.sha256  # noqa: ASYNC230
    assert done["sha256"] == served.sha256
    ranged = [r.range is not None for r in model_server.requests_for(name)]
    assert ranged == ([False, True, False] if tool == "curl" else [False, True])


@pytest.fixture
def path_without_git(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(d).iterdir():
            if tool.name != "git" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    return bin_dir


async def test_missing_git_is_a_missing_tool(make_plan, tmp_path, path_without_git):
    # README/errors.py: a missing tool (curl/wget, git) is exit 16, MissingTool; it came back as exit 14,
    # NodeInstallFailed, which reads as a broken node rather than a machine without git.
    bin_dir = path_without_git
    plan = await make_plan()
    plan.models = []
    plan_file = tmp_path / "plan.tsv"
    plan_file.write_text(plan.to_text())
    proc = await asyncio.create_subprocess_exec(
        "/bin/bash", str(SCRIPT), str(plan_file), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 16, stdout.decode() + stderr.decode()
    summary = json.loads(stdout.decode().splitlines()[-1])
    assert "git is not installed" in summary["errors"][0]["message"]
    assert isinstance(_error_for(16, summary["errors"], ""), MissingTool)


async def test_safetensors_header_length_past_2_63_is_not_a_valid_header(remote, make_plan, model_server):
    # The length is read as an unsigned 64-bit number; bash's `[ -gt ]` could not compare values past
    # 2^63 (an error, i.e. "not greater") and $((len + 8)) wrapped, so garbage with a high first 8 bytes
    # and a "{" passed the header check of a file with only an approximate size and no sha256.
    vae = remote.comfy_dir / "models/vae"
    vae.mkdir(parents=True)
    (vae / "vae.safetensors").write_bytes(b"\xff" * 8 + b'{"garbage": true}' + b"\0" * 1000)
    plan = await make_plan()
    plan.nodes = []
    plan.models = [
        dataclasses.replace(m, size_exact=False, sha256=None)
        for m in plan.models
        if m.name == "vae.safetensors"
    ]
    summary, events = await provision(remote, plan)
    assert any(e["event"] == "invalid" and "safetensors" in e["reason"] for e in events)
    assert summary.downloaded == ["vae.safetensors"]
    served = model_server.file("vae.safetensors")
    assert hashlib.sha256((vae / "vae.safetensors").read_bytes()).hexdigest() == served.sha256


async def test_mirror_password_in_its_url_stays_out_of_ps_and_the_instance_disk(
    remote, make_plan, model_server
):
    # MODEL_MIRROR_URL may carry user:password (a secret per Settings.secret_values). It went into
    # curl's argv (visible in `ps` on the rented host) and into every sidecar file on its disk.
    password = "mirror-pass-" + "9" * 8
    plan = await make_plan()
    plan.nodes = []
    plan.models = [
        dataclasses.replace(m, url=m.url.replace("http://", f"http://mirror:{password}@"))
        for m in plan.models
        if m.name in ("high.gguf", "vae.safetensors")
    ]
    model_server.fault("high.gguf").slow_bps = 3e6  # ~1 s of transfer to look at `ps` during
    task = asyncio.create_task(provision(remote, plan))
    snapshots = []
    while not task.done():
        proc = await asyncio.create_subprocess_exec("ps", "-ww", "-eo", "args", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        snapshots.append(out.decode(errors="replace"))
        await asyncio.sleep(0.05)
    summary, _ = await task
    assert sorted(summary.downloaded) == ["high.gguf", "vae.safetensors"]
    assert any("curl" in s and "/unet/high.gguf" in s for s in snapshots), (
        "no ps snapshot during the download"
    )
    assert not any(password in s for s in snapshots)
    for path in remote.comfy_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 100_000:
            assert password not in path.read_text(errors="replace"), path
    gets = [r for r in model_server.log if r.method == "GET"]
    assert gets and all(r.authorization for r in gets)  # the credentials still reach the mirror
