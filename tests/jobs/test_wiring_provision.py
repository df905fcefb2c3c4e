"""`SSHPreparer` against the real neighbours: an in-process SSH server with a sandbox, the model-file
server, local git repos for the custom nodes and the ComfyUI emulator behind an SSH tunnel."""

import contextlib

import asyncssh
import pytest

from app.config import Settings
from app.jobs.wiring import SSHPreparer
from app.pool.provider import ComfyEndpoint, Instance, InstanceState, SSHTarget
from app.sim.comfyui import ComfyEmulator
from app.sim.modelserver import ModelServer, default_files
from app.sim.sshserver import SandboxSSHServer, install_restart_hook, sim_restart_command
from app.workflows import get_workflow
from tests.comfy.world import object_info
from tests.support.gitrepos import make_node_repo

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


@contextlib.asynccontextmanager
async def simulated_instance(tmp_path):
    """An instance as the simulated world has one: SSH sandbox + ComfyUI emulator + model mirror."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "key"
    key.write_private_key(str(key_path))
    box = SandboxSSHServer(tmp_path / "instance", key.export_public_key("openssh").decode())
    comfy_dir = box.sandbox / "workspace/ComfyUI"
    emulator = ComfyEmulator(comfy_dir, object_info=object_info())
    mirror = ModelServer(tmp_path / "models", default_files(scale=0.01))
    comfy_url = await emulator.start()
    await mirror.start()
    port = await box.start()
    try:
        install_restart_hook(comfy_dir, sim_restart_command(comfy_url))
        base = Settings(data_dir=tmp_path / "data")
        workflow = get_workflow(base.default_workflow, base)
        repos = {
            n.name: make_node_repo(tmp_path / "repos", n.name, [{"__init__.py": "# sim\n"}])
            for n in workflow.custom_nodes
        }
        settings = Settings(
            data_dir=tmp_path / "data",
            model_mirror_url=mirror.url,
            ssh_key_path=key_path,
            custom_node_sources={name: (r.url, r.head) for name, r in repos.items()},
            cleanup_interval_s=0,
        )
        emu_port = int(comfy_url.rsplit(":", 1)[1].strip("/"))
        instance = Instance(
            provider="fake",
            id="i1",
            label="comfyfleet-test-i1",
            state=InstanceState.READY,
            price_per_hour=0.36,
            ssh=SSHTarget("127.0.0.1", port, "root"),
            comfy=ComfyEndpoint(via_tunnel=True, remote_host="127.0.0.1", remote_port=emu_port),
            comfy_dir=str(comfy_dir),
            simulated=True,
        )
        yield settings, workflow, instance, box, comfy_url
    finally:
        await box.stop()
        await mirror.stop()
        await emulator.stop()


class Ledger:
    def __init__(self) -> None:
        self.updated: list[Instance] = []

    async def update(self, instance: Instance) -> None:
        self.updated.append(instance)


async def test_prepare_provisions_pins_host_key_and_tunnels_to_comfy(tmp_path):
    async with simulated_instance(tmp_path) as (settings, workflow, instance, box, comfy_url):
        ledger = Ledger()
        preparer = SSHPreparer(settings, ledger)
        seen = []
        target = await preparer.prepare(instance, workflow, seen.append)
        assert target.url.startswith("http://127.0.0.1:") and target.url != comfy_url.rstrip("/")
        assert instance.ssh.host_key == box.host_key_line and ledger.updated == [instance]
        bytes_events = [p for p in seen if p.detail.get("bytes_total")]
        assert (
            bytes_events and bytes_events[-1].detail["bytes_done"] == bytes_events[-1].detail["bytes_total"]
        )
        again = await preparer.prepare(instance, workflow, seen.append)  # idempotent: all skipped
        assert again.url == target.url
        await preparer.release(instance)


async def test_job_runs_on_a_provisioned_instance_through_the_tunnel(tmp_path):
    from app.db import make_sessionmaker
    from app.jobs.services import assemble
    from app.jobs.wiring import comfy_connector
    from app.store.local import LocalStore
    from tests.comfy.world import make_start_image
    from tests.jobs.fakes import FakeLedger, FakeProvider
    from tests.jobs.harness import create_tables

    async with simulated_instance(tmp_path) as (settings, workflow, instance, _box, _url):
        provider = FakeProvider()
        provider.instances[instance.id] = instance
        engine = await create_tables(settings.effective_database_url)
        comfy = comfy_connector()
        services = assemble(
            settings,
            sessionmaker=make_sessionmaker(engine),
            provider=provider,
            preparer=SSHPreparer(settings),
            comfy=comfy,
            store=LocalStore(tmp_path / "results", "http://testserver"),
            workflows=lambda name: workflow,
            ledger=FakeLedger(),
            engine=engine,
        )
        services.closers.append(comfy.aclose)
        await services.start()
        try:
            image = make_start_image(tmp_path / "start.png", (96, 64))
            raw = {"prompt": "a fox", "num_frames": 9, "seed": 1}
            job = await services.submit(raw, await services.intake.from_path(image))
            job = await services.manager.wait(job.id, 60)
            assert job.state == "succeeded", job.error_message
            assert job.instance_id == "i1" and provider.created == []
            assert job.result["simulated"] is True and job.result["resolution"] == "768x512"
            assert "provisioning" in job.timings and job.cost_usd > 0
        finally:
            await services.stop()
