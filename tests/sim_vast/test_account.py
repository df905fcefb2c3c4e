"""Auth both ways, the current user, SSH keys (account and instance) and request_logs."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from app.sim.vast import VastEmulator
from tests.sim_vast.conftest import API_KEY, cheapest_ids, rent

KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA account@sim"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB instance@sim"


async def test_api_key_query_parameter_authenticates(emu: VastEmulator) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as anon:
        assert (await anon.get("/api/v0/users/current/", params={"api_key": API_KEY})).status_code == 200
        r = await anon.get("/api/v0/users/current/", params={"api_key": "nope"})
        assert r.status_code == 401 and r.json()["msg"] == "Invalid user key"
        r = await anon.get("/api/v0/users/current/")
        assert r.status_code == 401 and r.json()["error"] == "auth_error"


async def test_bad_key_status_can_be_404_like_some_real_endpoints() -> None:
    async with (
        VastEmulator([], api_key=API_KEY, bad_key_status=404) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": "Bearer wrong"}) as c,
    ):
        r = await c.get("/api/v1/instances/")
        assert r.status_code == 404 and r.json()["error"] == "auth_error"


async def test_instance_api_key_only_reaches_its_own_instance(
    client: httpx.AsyncClient, emu: VastEmulator
) -> None:
    a, b = await cheapest_ids(client, 2)
    created = (await client.put(f"/api/v0/asks/{a}/", json={"image": "img"})).json()
    other = await rent(client, b)
    scoped = {"Authorization": f"Bearer {created['instance_api_key']}"}
    async with httpx.AsyncClient(base_url=emu.url, headers=scoped) as c:
        assert (await c.get(f"/api/v0/instances/{created['new_contract']}/")).status_code == 200
        assert (await c.get(f"/api/v0/instances/{other}/")).status_code == 401
        assert (await c.get("/api/v1/instances/")).status_code == 401


async def test_current_user_with_and_without_trailing_slash(client: httpx.AsyncClient) -> None:
    for path in ("/api/v0/users/current", "/api/v0/users/current/"):
        user = (await client.get(path)).json()
        assert user["credit"] == 100.0 and "balance" in user and user["id"]


async def test_account_ssh_keys(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v0/ssh/", json={"ssh_key": KEY_A})
    assert r.status_code == 200 and r.json()["success"] is True
    created = r.json()["key"]
    assert created["public_key"] == KEY_A and created["deleted_at"] is None
    listed = (await client.get("/api/v0/ssh/")).json()
    assert [k["key"] for k in listed] == [KEY_A] and listed[0]["id"] == created["id"]
    r = await client.post("/api/v0/ssh/", json={})
    assert r.status_code == 400 and r.json()["error"] == "no_ssh_key"
    assert (await client.delete(f"/api/v0/ssh/{created['id']}/")).json() == {"success": True}
    assert (await client.get("/api/v0/ssh/")).json() == []


async def test_account_keys_reach_new_instances_only(client: httpx.AsyncClient) -> None:
    a, b = await cheapest_ids(client, 2)
    before = await rent(client, a)
    await client.post("/api/v0/ssh/", json={"ssh_key": KEY_A})
    after = await rent(client, b)

    async def keys(instance_id: int) -> list[str]:
        body = (await client.get(f"/api/v0/instances/{instance_id}/ssh/")).json()
        assert body["success"] is True and isinstance(body["ssh_keys"], str)  # a JSON-encoded string
        return [k["public_key"] for k in json.loads(body["ssh_keys"])]

    assert await keys(before) == [] and await keys(after) == [KEY_A]


async def test_instance_ssh_attach_list_detach(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    r = await client.post(f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": KEY_B})
    assert r.json() == {"success": True, "msg": "SSH key attached successfully"}
    [record] = json.loads((await client.get(f"/api/v0/instances/{instance_id}/ssh/")).json()["ssh_keys"])
    r = await client.delete(f"/api/v0/instances/{instance_id}/ssh/{record['id']}/")
    assert r.json() == {"success": True, "msg": "SSH key removed from instance."}
    assert (await client.delete(f"/api/v0/instances/{instance_id}/ssh/{record['id']}/")).status_code == 404
    assert (await client.post("/api/v0/instances/999/ssh/", json={"ssh_key": KEY_B})).status_code == 404
    r = await client.post(f"/api/v0/instances/{instance_id}/ssh/", json={"ssh_key": "not a key"})
    assert r.status_code == 400


async def test_request_logs_result_url_404s_then_serves_text(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id, label="logs")
    await client.get(f"/api/v0/instances/{instance_id}/")
    r = await client.put(f"/api/v0/instances/request_logs/{instance_id}/", json={"tail": "100"})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True
    async with httpx.AsyncClient() as anonymous:  # result_url needs no auth
        assert (await anonymous.get(body["result_url"])).status_code == 404
        deadline = time.monotonic() + 5
        while (got := await anonymous.get(body["result_url"])).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert "actual_status=running" in got.text and "created from offer" in got.text
    filtered = (
        await client.put(
            f"/api/v0/instances/request_logs/{instance_id}/", json={"filter": "created", "tail": "1"}
        )
    ).json()
    assert filtered["result_url"] != body["result_url"]
    r = await client.put("/api/v0/instances/request_logs/999/", json={})
    assert r.status_code == 404 and r.json()["error"] == "invalid_id"
