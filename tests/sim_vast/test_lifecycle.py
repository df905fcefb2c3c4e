"""Instance lifecycle: null -> loading -> running, late ports, stop/start, destroy, backend hook, billing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from app.sim.vast import BackendInfo, Timings, VastEmulator, default_market
from tests.sim_vast.conftest import API_KEY, IMAGE, RecordingBackend, cheapest_ids, rent, show

SLOW = Timings(scheduling_s=1.0, loading_s=2.0, restart_loading_s=1.0)


@pytest.fixture
async def slow_client() -> AsyncIterator[tuple[VastEmulator, httpx.AsyncClient]]:
    """Scheduling 0.15 s, loading 0.3 s of real time."""
    emu = VastEmulator(default_market(40, seed=2), api_key=API_KEY, time_scale=0.15, timings=SLOW)
    await emu.start()
    async with httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        yield emu, c
    await emu.stop()


async def wait_status(
    client: httpx.AsyncClient, instance_id: int, status: str | None, within: float = 5.0
) -> dict:
    deadline = time.monotonic() + within
    while True:
        inst = await show(client, instance_id)
        assert inst is not None
        if inst["actual_status"] == status:
            return inst
        assert time.monotonic() < deadline, f"still {inst['actual_status']!r}, wanted {status!r}"
        await asyncio.sleep(0.02)


async def test_status_flow_null_loading_running_with_late_ports(
    slow_client: tuple[VastEmulator, httpx.AsyncClient],
) -> None:
    _, client = slow_client
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id, env={"-p 8188:8188": "1", "WEB_PASSWORD": "pw"}, label="flow")
    first = await show(client, instance_id)
    assert first is not None and first["actual_status"] is None
    assert first["intended_status"] == "running" and first["cur_state"] == "running"
    assert first["ssh_host"] is None and first["ssh_port"] is None and first["public_ipaddr"] is None
    assert "ports" not in first
    loading = await wait_status(client, instance_id, "loading")
    assert "ports" not in loading and loading["ssh_port"] is None
    assert any(word in loading["status_msg"] for word in ("Pulling fs layer", "Downloading", "complete"))
    running = await wait_status(client, instance_id, "running")
    assert running["status_msg"].startswith("success, running " + IMAGE)
    ports = running["ports"]
    assert set(ports) == {"22/tcp", "8188/tcp"}
    assert ports["8188/tcp"][0]["HostIp"] == "0.0.0.0" and isinstance(ports["8188/tcp"][0]["HostPort"], str)
    assert running["ssh_host"] == "127.0.0.1" and isinstance(running["ssh_port"], int)
    assert running["public_ipaddr"] == "127.0.0.1"
    assert running["label"] == "flow" and running["image_uuid"] == IMAGE
    assert ["WEB_PASSWORD", "pw"] in running["extra_env"]
    assert running["image_runtype"] == "ssh ssh_direc ssh_proxy"


async def test_time_scale_zero_is_running_at_first_poll(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    inst = await show(client, instance_id)
    assert inst is not None and inst["actual_status"] == "running"


async def test_show_has_the_real_field_set(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id, label="fields")
    inst = await show(client, instance_id)
    expected = set(
        """
        id machine_id host_id bundle_id actual_status intended_status cur_state next_state
        status_msg label template_id template_hash_id image_uuid image_args image_runtype
        extra_env onstart jupyter_token ssh_host ssh_port ssh_idx public_ipaddr local_ipaddrs
        direct_port_count direct_port_start direct_port_end ports num_gpus gpu_name gpu_ram
        gpu_totalram gpu_frac gpu_util gpu_temp cuda_max_good driver_version cpu_name cpu_cores
        cpu_ram disk_space inet_up inet_down geolocation verification is_bid min_bid dph_base
        dph_total storage_cost storage_total_cost reliability2 dlperf total_flops score
        start_date end_date uptime_mins duration search instance credit_discount_max
        time_remaining
        """.split()
    )
    assert inst is not None and expected <= inst.keys()
    assert inst["disk_space"] == 20.0 and isinstance(inst["start_date"], float)


async def test_proxy_only_host_publishes_no_ports(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v0/bundles/", json={"direct_port_count": {"eq": 0}, "limit": 1})
    offer_id = r.json()["offers"][0]["id"]
    instance_id = await rent(client, offer_id, env={"-p 8188:8188": "1"})
    inst = await show(client, instance_id)
    assert inst is not None and inst["ports"] == {} and inst["ssh_port"]


async def test_without_backend_ports_refuse_connections(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    inst = await show(client, await rent(client, offer_id))
    assert inst is not None
    port = int(inst["ports"]["22/tcp"][0]["HostPort"])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_destroyed_and_unknown_instances_show_null(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    r = await client.delete(f"/api/v0/instances/{instance_id}/")
    assert r.status_code == 200 and r.json() == {"success": True, "msg": "Instance destroyed successfully"}
    assert await show(client, instance_id) is None
    assert await show(client, 123) is None


async def test_destroy_unknown_instance_is_404_not_found(client: httpx.AsyncClient) -> None:
    r = await client.delete("/api/v0/instances/424242/")
    assert r.status_code == 404
    assert r.json() == {"success": False, "error": "not_found", "msg": "Instance not found"}


async def test_stop_then_start(slow_client: tuple[VastEmulator, httpx.AsyncClient]) -> None:
    _, client = slow_client
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    await wait_status(client, instance_id, "running")
    r = await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "stopped"})
    assert r.status_code == 200 and r.json() == {"success": True}
    stopped = await show(client, instance_id)
    assert stopped is not None
    assert stopped["intended_status"] == "stopped" and stopped["actual_status"] == "exited"
    assert "ports" not in stopped and stopped["ssh_port"] is None
    await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "running"})
    assert (await wait_status(client, instance_id, "running"))["ports"]


async def test_label_and_bad_state(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    assert (
        await client.put(f"/api/v0/instances/{instance_id}/", json={"label": "renamed"})
    ).status_code == 200
    inst = await show(client, instance_id)
    assert inst is not None and inst["label"] == "renamed"
    r = await client.put(f"/api/v0/instances/{instance_id}/", json={"state": "paused"})
    assert r.status_code == 400
    assert (await client.put("/api/v0/instances/777/", json={"label": "x"})).status_code == 404


async def test_bulk_stop_and_bulk_destroy(client: httpx.AsyncClient) -> None:
    ids = [await rent(client, oid) for oid in await cheapest_ids(client, 3)]
    r = await client.put("/api/v0/instances/", json={"ids": ids[:2], "state": "stopped"})
    assert r.status_code == 200 and r.json()["success"] is True
    states = [(await show(client, i) or {}).get("intended_status") for i in ids]
    assert states == ["stopped", "stopped", "running"]
    r = await client.request("DELETE", "/api/v0/instances/", json={"instance_ids": ids})
    assert r.status_code == 200 and sorted(r.json()["destroyed"]) == sorted(ids)
    assert [await show(client, i) for i in ids] == [None, None, None]


async def test_backend_boot_receives_body_and_keys_and_teardown_on_destroy() -> None:
    backend = RecordingBackend()
    async with (
        VastEmulator(default_market(20, seed=4), api_key=API_KEY, backend=backend) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        await c.post("/api/v0/ssh/", json={"ssh_key": "ssh-ed25519 AAAAC3Nza account@key"})
        (offer_id,) = await cheapest_ids(c, 1)
        instance_id = await rent(c, offer_id, env={"-p 8188:8188": "1", "WEB_PASSWORD": "s3cret"})
        inst = await show(c, instance_id)
        assert inst is not None
        assert inst["ports"]["8188/tcp"][0]["HostPort"] == "28188"
        assert inst["ports"]["22/tcp"][0]["HostPort"] == "20022" and inst["ssh_port"] == 20022
        [(booted_id, body, keys)] = backend.boots
        assert booted_id == instance_id and body["env"]["WEB_PASSWORD"] == "s3cret"
        assert keys == ["ssh-ed25519 AAAAC3Nza account@key"]
        await c.post(
            f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": "ssh-ed25519 AAAAlate late@key"}
        )
        assert backend.keys_added == [(instance_id, "ssh-ed25519 AAAAlate late@key")]
        await c.delete(f"/api/v0/instances/{instance_id}/")
        assert backend.teardowns == [instance_id]


async def test_backend_boot_failure_is_an_exited_instance() -> None:
    async with (
        VastEmulator(default_market(10, seed=4), api_key=API_KEY, backend=RecordingBackend(fail=True)) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        (offer_id,) = await cheapest_ids(c, 1)
        inst = await show(c, await rent(c, offer_id))
        assert inst is not None and inst["actual_status"] == "exited"
        assert inst["intended_status"] == "running" and "sandbox could not start" in inst["status_msg"]


async def test_billing_charges_running_instances_over_scaled_time() -> None:
    # time_scale 0.001: one real second is 1000 emulated seconds
    async with (
        VastEmulator(default_market(20, seed=5), api_key=API_KEY, time_scale=0.001, credit=50.0) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        (offer_id,) = await cheapest_ids(c, 1)
        inst = await show(c, await rent(c, offer_id))
        await asyncio.sleep(0.4)
        user = (await c.get("/api/v0/users/current")).json()
        assert inst is not None
        expected = inst["dph_total"] * 0.4 * 1000 / 3600
        assert 50.0 - user["credit"] == pytest.approx(expected, rel=0.5)


async def test_credit_exhaustion_stops_running_instances() -> None:
    async with (
        VastEmulator(default_market(20, seed=5), api_key=API_KEY, time_scale=0.00001, credit=0.5) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        (offer_id,) = await cheapest_ids(c, 1)
        instance_id = await rent(c, offer_id)
        deadline = time.monotonic() + 5
        while True:
            inst = await show(c, instance_id)
            assert inst is not None
            if inst["intended_status"] == "stopped":
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert inst["actual_status"] == "exited" and "credit" in inst["status_msg"]
        assert emu.credit <= 0


async def test_shutdown_tears_down_a_boot_in_flight() -> None:
    class SlowBoot(RecordingBackend):
        started = asyncio.Event()

        async def boot(self, instance_id, create_body, ssh_keys):
            self.started.set()
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    backend = SlowBoot()
    emu = VastEmulator(default_market(10, seed=8), api_key=API_KEY, backend=backend)
    await emu.start()
    async with httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        (offer_id,) = await cheapest_ids(c, 1)
        instance_id = await rent(c, offer_id)
        await asyncio.wait_for(backend.started.wait(), 5)
    await asyncio.wait_for(emu.stop(), 5)
    assert backend.teardowns == [instance_id]


class BannerBackend:
    """Boots a real TCP server per instance that greets like sshd, so published ports really answer."""

    def __init__(self) -> None:
        self.servers: dict[int, asyncio.Server] = {}

    async def boot(self, instance_id, create_body, ssh_keys):
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(f"SSH-2.0-sim-{instance_id}\r\n".encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        self.servers[instance_id] = server
        port = server.sockets[0].getsockname()[1]
        return BackendInfo("127.0.0.1", "127.0.0.1", port, {"22/tcp": port})

    async def teardown(self, instance_id):
        server = self.servers.pop(instance_id)
        server.close()
        await server.wait_closed()


async def test_published_ssh_port_reaches_the_backend_until_destroy() -> None:
    async with (
        VastEmulator(default_market(10, seed=9), api_key=API_KEY, backend=BannerBackend()) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        (offer_id,) = await cheapest_ids(c, 1)
        instance_id = await rent(c, offer_id)
        inst = await show(c, instance_id)
        assert inst is not None
        port = int(inst["ports"]["22/tcp"][0]["HostPort"])
        reader, writer = await asyncio.open_connection(inst["public_ipaddr"], port)
        assert await reader.readline() == f"SSH-2.0-sim-{instance_id}\r\n".encode()
        writer.close()
        await c.delete(f"/api/v0/instances/{instance_id}/")
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
