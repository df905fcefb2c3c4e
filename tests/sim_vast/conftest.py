"""Fixtures: a running emulator and an httpx client authenticated against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.sim.vast import BackendInfo, VastEmulator, default_market

API_KEY = "test-key-0123456789"
IMAGE = "vastai/comfy:@vastai-automatic-tag"


@pytest.fixture
async def emu() -> AsyncIterator[VastEmulator]:
    emulator = VastEmulator(default_market(80, seed=1), api_key=API_KEY, time_scale=0.0)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def client(emu: VastEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10.0
    ) as c:
        yield c


async def search(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    r = await client.post("/api/v0/bundles/", json=body or {})
    assert r.status_code == 200, r.text
    return r.json()["offers"]


async def rent(client: httpx.AsyncClient, offer_id: int, **body: Any) -> int:
    """Create an instance on `offer_id`; returns the instance id (`new_contract`)."""
    payload = {"image": IMAGE, "disk": 20, "runtype": "ssh_direc ssh_proxy", **body}
    r = await client.put(f"/api/v0/asks/{offer_id}/", json=payload)
    assert r.status_code == 200, r.text
    return int(r.json()["new_contract"])


async def cheapest_ids(client: httpx.AsyncClient, n: int) -> list[int]:
    offers = await search(
        client, {"direct_port_count": {"gt": 0}, "order": [["dph_total", "asc"]], "limit": n}
    )
    assert len(offers) == n
    return [o["id"] for o in offers]


async def show(client: httpx.AsyncClient, instance_id: int) -> dict[str, Any] | None:
    r = await client.get(f"/api/v0/instances/{instance_id}/")
    assert r.status_code == 200, r.text
    return r.json()["instances"]


class RecordingBackend:
    """An InstanceBackend that records calls and answers fixed addresses (nothing listens)."""

    def __init__(self, fail: bool = False) -> None:
        self.boots: list[tuple[int, dict[str, Any], list[str]]] = []
        self.teardowns: list[int] = []
        self.keys_added: list[tuple[int, str]] = []
        self.fail = fail

    async def boot(self, instance_id: int, create_body: dict[str, Any], ssh_keys: list[str]) -> BackendInfo:
        if self.fail:
            raise RuntimeError("sandbox could not start")
        self.boots.append((instance_id, create_body, ssh_keys))
        return BackendInfo(
            public_ipaddr="127.0.0.1",
            ssh_host="127.0.0.1",
            ssh_port=20022,
            ports={"22/tcp": 20022, "8188/tcp": 28188},
        )

    async def teardown(self, instance_id: int) -> None:
        self.teardowns.append(instance_id)

    async def add_ssh_key(self, instance_id: int, key: str) -> None:
        self.keys_added.append((instance_id, key))
