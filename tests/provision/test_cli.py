"""`comfyfleet provision` against the shipped Wan workflow, with models from a mirror and local node repos."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.sim.modelserver import ModelServer, default_files

pytestmark = pytest.mark.sshd


@pytest.fixture
async def wan_mirror(served_root):
    server = ModelServer(served_root / "wan", default_files(scale=0.125))
    await server.start()
    yield server
    await server.stop()


def cli_args(sshd, wan_mirror, node_repos, tmp_path, stub_python) -> list[str]:
    gguf, vhs = node_repos["ComfyUI-GGUF"], node_repos["ComfyUI-VideoHelperSuite"]
    return [
        "provision",
        "--ssh", f"root@{sshd.host}:{sshd.port}",
        "--key", str(sshd.client_key_path),
        "--host-key", sshd.host_key_line,
        "--comfy-dir", str(tmp_path / "ComfyUI"),
        "--models-from", wan_mirror.url,
        "--node-source", f"ComfyUI-GGUF={gguf.url}@{gguf.head}",
        "--node-source", f"comfyui-videohelpersuite={vhs.url}@{vhs.head}",
        "--restart-cmd", "",
        "--python", str(stub_python),
    ]  # fmt: skip


@pytest.fixture
def stub_python(tmp_path):
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def run_cli(args: list[str]):
    # The CLI calls asyncio.run itself, so it runs in a worker thread next to this test's event loop.
    return CliRunner().invoke(cli, args, catch_exceptions=False)


async def test_provision_command_json_lines_then_skips_on_second_run(
    sshd, wan_mirror, node_repos, tmp_path, stub_python
):
    import asyncio

    args = cli_args(sshd, wan_mirror, node_repos, tmp_path, stub_python)
    first = await asyncio.to_thread(run_cli, [*args, "--json"])
    assert first.exit_code == 0, first.output
    events = [json.loads(line) for line in first.output.splitlines()]
    assert events[-1]["event"] == "summary" and events[-1]["downloaded"] == 6
    for f in wan_mirror.files.values():
        assert (tmp_path / "ComfyUI/models" / f.spec.folder / f.spec.name).stat().st_size == f.size

    second = await asyncio.to_thread(run_cli, args)
    assert second.exit_code == 0, second.output
    assert "0 downloaded" in second.output and "6 already present" in second.output
