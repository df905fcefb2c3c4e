"""Fixtures for provisioning tests: a model server, node repos, and an SSH-reachable "instance"."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from app.config import get_settings
from app.pool.provider import SSHTarget
from app.provision import Plan, build_plan
from app.sim.modelserver import FileSpec, ModelServer
from app.sim.sshserver import SandboxSSHServer
from tests.support.gitrepos import NodeRepo, default_node_repos
from tests.support.sshd import sshd, unavailable_reason  # noqa: F401

MB = 1024 * 1024
FILES = [
    FileSpec("unet", "high.gguf", 3 * MB),
    FileSpec("unet", "low.gguf", 2 * MB),
    FileSpec("text_encoders", "umt5.safetensors", 2 * MB),
    FileSpec("vae", "vae.safetensors", MB // 2),
]


@dataclass
class FakeModel:
    name: str
    folder: str
    url: str
    size: int | None
    sha256: str | None = None


@dataclass
class FakeNode:
    name: str
    git_url: str
    commit: str
    node_types: list[str] = field(default_factory=list)


@dataclass
class FakeWorkflow:
    name: str
    models: list[FakeModel]
    custom_nodes: list[FakeNode]


@dataclass
class Remote:
    """An instance reachable over SSH: where ComfyUI lives and where the script is uploaded."""

    kind: str
    target: SSHTarget
    key_path: Path
    comfy_dir: Path
    remote_dir: str
    pip_log: Path
    restart_log: Path


@pytest.fixture(scope="session")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("modelserver")


@pytest.fixture
async def model_server(served_root: Path):
    server = ModelServer(served_root, FILES)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def node_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodeRepo]:
    return default_node_repos(tmp_path_factory.mktemp("repos"))


@pytest.fixture
def workflow(model_server: ModelServer, node_repos: dict[str, NodeRepo]) -> FakeWorkflow:
    """Manifest URLs point at the server's HF-style route; sizes are approximate, as in manifests."""
    models = [
        FakeModel(f.spec.name, f.spec.folder, model_server.hf_url(f.spec.name), f.size + 1000)
        for f in model_server.files.values()
    ]
    gguf = node_repos["ComfyUI-GGUF"]
    vhs = node_repos["ComfyUI-VideoHelperSuite"]
    nodes = [
        FakeNode("ComfyUI-GGUF", "https://github.com/city96/ComfyUI-GGUF", "795e451", ["UnetLoaderGGUF"]),
        FakeNode(
            "ComfyUI-VideoHelperSuite",
            "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite",
            "4ee72c0",
            ["VHS_VideoCombine"],
        ),
    ]
    wf = FakeWorkflow("testflow", models, nodes)
    wf.node_sources = {  # type: ignore[attr-defined]
        "ComfyUI-GGUF": (gguf.url, gguf.commits[0]),  # pinned to an older commit than HEAD
        "ComfyUI-VideoHelperSuite": (vhs.url, vhs.head),
    }
    return wf


def _stub_python(path: Path, log: Path, rc: int = 0) -> Path:
    path.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {rc}\n')
    path.chmod(0o755)
    return path


@pytest.fixture(params=["sshd"])
async def remote(request: pytest.FixtureRequest, tmp_path: Path):
    """The "instance": a real OpenSSH sshd (default), or the in-process sandbox server."""
    kind = request.param
    if kind == "sshd":
        if unavailable_reason():
            pytest.skip(unavailable_reason())
        server = request.getfixturevalue("sshd")
        comfy = tmp_path / "ComfyUI"
        yield Remote(
            "sshd",
            server.target(),
            server.client_key_path,
            comfy,
            str(tmp_path / "remote"),
            tmp_path / "pip.log",
            tmp_path / "restart.log",
        )
        return
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "client_key"
    key.write_private_key(str(key_path))
    os.chmod(key_path, 0o600)
    sandbox = SandboxSSHServer(tmp_path / "sandbox", key.export_public_key("openssh").decode())
    port = await sandbox.start()
    target = SSHTarget("127.0.0.1", port, "root", sandbox.host_key_line)
    yield Remote(
        "sandbox",
        target,
        key_path,
        sandbox.sandbox / "ComfyUI",
        ".comfyfleet",
        tmp_path / "pip.log",
        tmp_path / "restart.log",
    )
    await sandbox.stop()


@pytest.fixture
async def make_plan(workflow: FakeWorkflow, model_server: ModelServer, remote: Remote, tmp_path: Path):
    """A plan for `workflow` on `remote`, with fast retries and a stub for ComfyUI's Python/pip."""

    async def make(*, mirror: bool = True, pip_rc: int = 0, **overrides) -> Plan:
        plan = await build_plan(
            workflow,
            get_settings(),
            mirror_url=model_server.url if mirror else None,
            node_sources=workflow.node_sources,  # type: ignore[attr-defined]
            token_hosts=("127.0.0.1",),  # the HF-style route; its CDN redirect goes to "localhost"
        )
        stub = _stub_python(tmp_path / f"python-stub-{pip_rc}", remote.pip_log, pip_rc)
        defaults = dict(
            comfy_dir=str(remote.comfy_dir),
            python=str(stub),
            restart_cmd=f"echo restarted >> {remote.restart_log}",
            comfy_url=model_server.url + "/",
            min_free_bytes=0,
            backoff_s=0.2,
            retries=3,
            progress_interval_s=0.2,
        )
        defaults.update(overrides)
        return dataclasses.replace(plan, **defaults)

    return make
