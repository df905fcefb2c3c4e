"""`PUT /api/v0/asks/{id}/`: validation, offer-gone answers, credit, and the success shape."""

from __future__ import annotations

import httpx
import pytest

from app.sim.vast import VastEmulator, make_offer
from tests.sim_vast.conftest import API_KEY, IMAGE, cheapest_ids, rent, search


async def test_create_answers_new_contract_and_instance_api_key(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    r = await client.put(f"/api/v0/asks/{offer_id}/", json={"image": IMAGE, "disk": 40, "label": "x"})
    body = r.json()
    assert r.status_code == 200
    assert body["success"] is True and isinstance(body["new_contract"], int)
    assert body["new_contract"] != offer_id
    assert isinstance(body["instance_api_key"], str) and len(body["instance_api_key"]) >= 32


@pytest.mark.parametrize(
    ("patch", "error", "fragment"),
    [
        ({"env": "-e A=1 -p 8188:8188"}, "invalid_args", "invalid env type"),
        ({"env": ["A", "1"]}, "invalid_args", "env must be a dict"),
        ({"disk": 7}, "invalid_args", "at least 8"),
        ({"label": "x" * 257}, "invalid_args", "label"),
        ({"onstart": "x" * 4049}, "invalid_args", "onstart"),
        ({"price": 0.0001}, "invalid_price", "price"),
        ({"price": 129}, "invalid_price", "price"),
        ({"image": None}, "invalid_args", "image"),
        ({"runtype": "telnet"}, "invalid_args", "runtype"),
    ],
)
async def test_invalid_create_body_is_400(
    client: httpx.AsyncClient, patch: dict, error: str, fragment: str
) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    r = await client.put(f"/api/v0/asks/{offer_id}/", json={"image": IMAGE, "disk": 20, **patch})
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False and body["error"] == error and fragment in body["msg"]
    assert body["ask_id"] == offer_id
    assert offer_id in {o["id"] for o in await search(client)}  # nothing was rented


async def test_bid_below_min_bid_is_invalid_price(client: httpx.AsyncClient) -> None:
    offer = (await search(client, {"type": "bid", "limit": 1}))[0]
    r = await client.put(f"/api/v0/asks/{offer['id']}/", json={"image": IMAGE, "price": offer["min_bid"] / 2})
    assert r.status_code == 400 and r.json()["error"] == "invalid_price"
    ok = await client.put(
        f"/api/v0/asks/{offer['id']}/", json={"image": IMAGE, "price": offer["min_bid"] * 1.1}
    )
    assert ok.status_code == 200
    inst = (await client.get(f"/api/v0/instances/{ok.json()['new_contract']}/")).json()["instances"]
    assert inst["is_bid"] is True


async def test_unknown_offer_is_404_no_such_ask_3603(client: httpx.AsyncClient) -> None:
    r = await client.put("/api/v0/asks/999/", json={"image": IMAGE})
    assert r.status_code == 404
    body = r.json()
    assert body["error"] == "invalid_args" and "no_such_ask" in body["msg"] and "3603" in body["msg"]
    assert body["ask_id"] == 999


async def test_unavailable_offer_with_cancel_unavail_is_410_3907(client: httpx.AsyncClient) -> None:
    r = await client.put("/api/v0/asks/999/", json={"image": IMAGE, "cancel_unavail": True})
    assert r.status_code == 410
    body = r.json()
    assert body["error"] == "no_such_ask" and "3907" in body["msg"]


async def test_offer_already_rented_by_us_is_no_such_ask(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    await rent(client, offer_id)
    r = await client.put(f"/api/v0/asks/{offer_id}/", json={"image": IMAGE})
    assert r.status_code == 404 and "no_such_ask" in r.json()["msg"]


async def test_non_numeric_offer_id_is_400(client: httpx.AsyncClient) -> None:
    r = await client.put("/api/v0/asks/abc/", json={"image": IMAGE})
    assert r.status_code == 400 and "3467" in r.json()["msg"]


async def test_insufficient_credit_is_a_marked_synthetic_error() -> None:
    offers = [make_offer(id=5, dph_base=0.5)]
    async with (
        VastEmulator(offers, api_key=API_KEY, credit=0.2) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        r = await c.put("/api/v0/asks/5/", json={"image": IMAGE})
        assert r.status_code == 400
        body = r.json()
        assert body["error"] == "insufficient_credit" and body["simulated"] is True
        assert "simulated" in body["msg"]
        emu.credit = 10.0
        assert (await c.put("/api/v0/asks/5/", json={"image": IMAGE})).status_code == 200


async def test_destroy_returns_the_offer_to_the_market(client: httpx.AsyncClient) -> None:
    (offer_id,) = await cheapest_ids(client, 1)
    instance_id = await rent(client, offer_id)
    assert (await client.delete(f"/api/v0/instances/{instance_id}/")).status_code == 200
    assert offer_id in {o["id"] for o in await search(client)}


async def test_create_requires_auth(emu: VastEmulator) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as anon:
        r = await anon.put("/api/v0/asks/1/", json={"image": IMAGE})
        assert r.status_code == 401 and r.json()["error"] == "auth_error"
