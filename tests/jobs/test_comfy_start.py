"""The ComfyUI-start deadline: on an instance booted from Vast's image, a ComfyUI that never answers is
found out within COMFY_START_TIMEOUT_S (not the hour-long provisioning deadline), the instance is marked
bad, and its machine is avoided by the next create."""

from __future__ import annotations

import socket
import time

import pytest

from app.config import Settings
from app.jobs.wiring import SSHPreparer
from app.pool.provider import ComfyEndpoint, Instance
from app.provision.errors import ComfyNeverStarted
from app.vast.provider import VastProvider


def refused_url() -> str:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Workflow:
    name = "wf"
    node_types: tuple = ()
    models: tuple = ()
    custom_nodes: tuple = ()


def instance(provider: str) -> Instance:
    return Instance(
        provider=provider,
        id="7",
        label="comfyfleet-default-abc",
        machine_id="4242",
        comfy=ComfyEndpoint(url=refused_url(), via_tunnel=False),
    )


async def test_comfy_never_starts_found_within_the_start_deadline():
    settings = Settings(_env_file=None, comfy_start_timeout_s=0.5, provision_timeout_s=3600)
    inst = instance("vast")
    t0 = time.monotonic()
    with pytest.raises(ComfyNeverStarted, match=r"did not answer within [01] s") as err:
        await SSHPreparer(settings).prepare(inst, Workflow(), lambda _p: None)
    assert time.monotonic() - t0 < 30  # minutes at most, never the provisioning hour
    assert err.value.retryable and err.value.instance_broken
    assert inst.meta["machine_fault"] is True and "did not answer" in inst.meta["failure"]


async def test_comfy_never_starts_machine_avoided_after_destroy():
    class Client:
        async def destroy_instance(self, instance_id):
            return True

    class Ledger:
        async def update(self, inst):
            pass

    provider = VastProvider(Client(), Ledger(), Settings(_env_file=None))  # type: ignore[arg-type]
    inst = instance("vast")
    inst.meta["machine_fault"] = True
    await provider.destroy(inst)
    assert "4242" in provider.bad_machines
    healthy = instance("vast")
    healthy.machine_id = "5"
    await provider.destroy(healthy)
    assert "5" not in provider.bad_machines
