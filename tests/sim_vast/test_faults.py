"""Every fault switch of the emulator, named after the failure it simulates."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from app.sim.vast import Timings, VastEmulator, VastFaults, default_market
from tests.sim_vast.conftest import API_KEY, IMAGE, RecordingBackend, cheapest_ids, rent, search, show

FAST = Timings(scheduling_s=0.5, loading_s=0.5, exit_after_s=1.0, unknown_after_s=1.0, offline_after_s=1.0)


async def _until(client: httpx.AsyncClient, instance_id: int, status: str, within: float = 5.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        inst = await show(client, instance_id)
        assert inst is not None
        if inst["actual_status"] == status:
            return inst
        assert time.monotonic() < deadline, f"still {inst['actual_status']!r}, wanted {status!r}"
        await asyncio.sleep(0.02)


async def test_rate_limit_burst_answers_plain_text_429(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    emu.faults.rate_limit_burst = 2
    emu.faults.rate_limit_retry_after = 1.5
    for _ in range(2):
        r = await client.get("/api/v0/instances/1/")
        assert r.status_code == 429
        assert r.text.startswith("API requests too frequent endpoint threshold=")
        assert r.headers["Content-Type"].startswith("text/plain") and r.headers["Retry-After"] == "1.5"
    assert (await client.get("/api/v0/instances/1/")).status_code == 200


@pytest.mark.parametrize(
    ("style", "check"),
    [
        ("detail", lambda r: r.json() == {"detail": "API requests too frequent endpoint threshold=4.5"}),
        ("json", lambda r: r.json()["error"] == "rate_limit_exceeded" and "threshold=4.5" in r.json()["msg"]),
    ],
)
async def test_rate_limit_burst_with_json_bodies(
    emu: VastEmulator, client: httpx.AsyncClient, style, check
) -> None:
    emu.faults.update({"rate_limit_burst": 1, "rate_limit_body": style})
    r = await client.put("/api/v0/asks/1/", json={"image": IMAGE})
    assert r.status_code == 429 and check(r)


async def test_server_errors_only_hit_the_chosen_route(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    emu.faults.update({"server_errors": 2, "server_error_route": "create", "server_error_status": 502})
    assert (await client.get("/api/v0/instances/1/")).status_code == 200
    (offer_id,) = await cheapest_ids(client, 1)
    for _ in range(2):
        assert (await client.put(f"/api/v0/asks/{offer_id}/", json={"image": IMAGE})).status_code == 502
    assert emu.instances == {}  # a 5xx before the handler creates nothing
    assert (await client.put(f"/api/v0/asks/{offer_id}/", json={"image": IMAGE})).status_code == 200


async def test_offer_taken_between_search_and_create(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    first, second = await cheapest_ids(client, 2)
    emu.faults.take_offer_ids.add(first)
    r = await client.put(f"/api/v0/asks/{first}/", json={"image": IMAGE})
    assert r.status_code == 404 and "no_such_ask" in r.json()["msg"]
    assert first not in {o["id"] for o in await search(client)}  # gone for good
    emu.faults.take_next_creates = 1
    r = await client.put(f"/api/v0/asks/{second}/", json={"image": IMAGE, "cancel_unavail": True})
    assert r.status_code == 410 and r.json()["error"] == "no_such_ask"
    assert emu.instances == {}


async def test_create_times_out_but_did_create(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    emu.faults.update({"create_timeouts": 1, "create_timeout_s": 5.0})
    (offer_id,) = await cheapest_ids(client, 1)
    with pytest.raises(httpx.ReadTimeout):
        await client.put(f"/api/v0/asks/{offer_id}/", json={"image": IMAGE, "label": "lost-1"}, timeout=0.3)
    r = await client.get(
        "/api/v1/instances/", params={"select_filters": json.dumps({"label": {"eq": "lost-1"}})}
    )
    assert len(r.json()["instances"]) == 1  # the rental happened: find it by label, never create again


async def test_create_drops_connection_but_did_create(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    emu.faults.update({"create_timeouts": 1, "create_timeout_mode": "drop"})
    (offer_id,) = await cheapest_ids(client, 1)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.put(f"/api/v0/asks/{offer_id}/", json={"image": IMAGE, "label": "lost-2"})
    assert [i.label for i in emu.instances.values()] == ["lost-2"]
    assert [(c.route, c.status) for c in emu.calls if c.route == "create"] == [("create", None)]


async def test_instance_stuck_in_loading(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    emu.faults.next_instance_faults.append("stuck_loading")
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    for _ in range(5):
        inst = await show(client, instance_id)
        assert inst is not None and inst["actual_status"] == "loading" and "ports" not in inst
        assert inst["status_msg"].endswith("\n")
        await asyncio.sleep(0.02)


async def test_instance_goes_unknown_then_offline() -> None:
    async with (
        VastEmulator(default_market(20, seed=6), api_key=API_KEY, time_scale=0.1, timings=FAST) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        (offer_id,) = await cheapest_ids(c, 1)
        instance_id = await rent(c, offer_id)
        emu.inject(instance_id, "offline")
        unknown = await _until(c, instance_id, "unknown")
        assert unknown["intended_status"] == "running"
        await _until(c, instance_id, "offline")


async def test_instance_exits_while_intended_running() -> None:
    async with (
        VastEmulator(default_market(20, seed=6), api_key=API_KEY, time_scale=0.1, timings=FAST) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        emu.faults.next_instance_faults.append("exited")
        (offer_id,) = await cheapest_ids(c, 1)
        instance_id = await rent(c, offer_id)
        await _until(c, instance_id, "running")
        exited = await _until(c, instance_id, "exited")
        assert exited["intended_status"] == "running" and "ports" not in exited


async def test_host_whose_ssh_never_comes_up() -> None:
    backend = RecordingBackend()
    async with (
        VastEmulator(default_market(20, seed=6), api_key=API_KEY, backend=backend) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        bad, good = await cheapest_ids(c, 2)
        emu.faults.offer_faults[bad] = "ssh_never"
        inst = await show(c, await rent(c, bad, env={"-p 8188:8188": "1"}))
        assert inst is not None and inst["actual_status"] == "running"
        assert set(inst["ports"]) == {"22/tcp", "8188/tcp"}
        assert backend.boots == []  # nothing behind the published ports
        port = int(inst["ports"]["22/tcp"][0]["HostPort"])
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        assert await show(c, await rent(c, good))
        assert len(backend.boots) == 1


async def test_oci_error_keeps_instance_created(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    emu.faults.next_instance_faults.append("oci_error")
    (offer_id,) = await cheapest_ids(client, 1)
    inst = await show(client, await rent(client, offer_id))
    assert inst is not None and inst["actual_status"] == "created"
    assert "OCI runtime create failed" in inst["status_msg"]


async def test_faults_can_be_set_over_http(emu: VastEmulator, client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    r = await client.post(
        "/__sim/faults",
        json={"rate_limit_burst": 1, "inject": {str(instance_id): "offline"}, "take_offer_ids": [7]},
    )
    assert r.status_code == 200 and r.json()["rate_limit_burst"] == 1 and r.json()["take_offer_ids"] == [7]
    assert emu.faults.take_offer_ids == {7} and emu.instances[instance_id].fault == "offline"
    assert (await client.get("/api/v0/users/current/")).status_code == 429
    assert (await client.post("/__sim/faults", json={"nonsense": 1})).status_code == 400
    assert (await client.post("/__sim/faults", json={"next_instance_faults": ["melt"]})).status_code == 400


def test_faults_json_round_trip() -> None:
    faults = VastFaults(take_offer_ids={3, 1}, offer_faults={5: "exited"})
    again = VastFaults()
    again.update(json.loads(json.dumps(faults.to_json())))
    assert again == faults


async def test_new_instance_shows_null_right_after_create(
    emu: VastEmulator, client: httpx.AsyncClient
) -> None:
    emu.faults.null_shows_after_create = 2
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    assert await show(client, instance_id) is None
    assert await show(client, instance_id) is None
    inst = await show(client, instance_id)
    assert inst is not None and inst["id"] == instance_id


async def test_hung_backend_boot_blocks_only_its_own_instance() -> None:
    class HangingFirst(RecordingBackend):
        async def boot(self, instance_id, create_body, ssh_keys):
            if not self.boots and not getattr(self, "hung", False):
                self.hung = True
                await asyncio.sleep(3600)
            return await super().boot(instance_id, create_body, ssh_keys)

    backend = HangingFirst()
    async with (
        VastEmulator(default_market(20, seed=7), api_key=API_KEY, backend=backend) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        a, b = await cheapest_ids(c, 2)
        await rent(c, a)
        second = await rent(c, b)
        deadline = time.monotonic() + 3
        while emu.instances[second].phase != "running":  # the ticker boots it without any poll
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
