"""`/bundles/` search: the real record shape, filter operators, coercion, pricing and ordering."""

from __future__ import annotations

import json

import httpx
import pytest

from app.sim.vast import VastEmulator, default_market, make_offer
from tests.sim_vast.conftest import API_KEY, rent, search

REAL_OFFER_KEYS = set(
    """
    id ask_contract_id bundle_id bundled_results machine_id host_id hosting_type num_gpus gpu_name
    gpu_ram gpu_total_ram gpu_frac gpu_ids compute_cap cuda_max_good driver_version driver_vers
    cpu_name cpu_cores cpu_ram disk_space disk_bw inet_down inet_up direct_port_count public_ipaddr
    geolocation dph_base dph_total min_bid is_bid storage_cost storage_total_cost dlperf
    dlperf_per_dphtotal flops_per_dphtotal total_flops score reliability reliability2 rentable rented
    external verification duration search instance rn start_date end_date
    """.split()
)


async def test_offer_record_has_real_fields_and_units(client: httpx.AsyncClient) -> None:
    offers = await search(client)
    assert len(offers) == 80
    for offer in offers:
        assert REAL_OFFER_KEYS <= offer.keys()
        assert offer["id"] == offer["ask_contract_id"]
        assert offer["bundle_id"] != offer["id"]
        assert offer["gpu_total_ram"] == offer["gpu_ram"] * offer["num_gpus"]
        assert offer["geolocation"][-2:].isupper()
    by_name = {o["gpu_name"]: o["gpu_ram"] for o in offers}
    assert by_name.get("RTX 4090", 24564) == 24564  # MB, not GB
    assert any(" " in name for name in by_name)  # names with spaces


async def test_default_market_is_reproducible_and_varied() -> None:
    a, b = default_market(200, seed=3), default_market(200, seed=3)
    assert [o["id"] for o in a] == [o["id"] for o in b]
    assert len({o["id"] for o in a}) == 200
    assert {"verified", "unverified"} <= {o["verification"] for o in a}
    assert any(o["direct_port_count"] == 0 for o in a) and any(o["direct_port_count"] > 0 for o in a)
    assert len({o["gpu_name"] for o in a}) >= 8
    assert any(o["gpu_ram"] < 24000 for o in a)  # small cards exist, so VRAM filters matter


async def test_numeric_strings_are_coerced(client: httpx.AsyncClient) -> None:
    as_numbers = await search(
        client, {"reliability": {"gt": 0.98}, "num_gpus": {"eq": 1}, "gpu_ram": {"gte": 24000}}
    )
    as_strings = await search(
        client, {"reliability": {"gt": "0.98"}, "num_gpus": {"eq": "1"}, "gpu_ram": {"gte": "24000.0"}}
    )
    assert as_numbers and [o["id"] for o in as_numbers] == [o["id"] for o in as_strings]
    assert all(o["reliability"] > 0.98 and o["num_gpus"] == 1 and o["gpu_ram"] >= 24000 for o in as_strings)


@pytest.mark.parametrize(
    ("op", "value", "check"),
    [
        ("eq", 2, lambda v: v == 2),
        ("neq", 1, lambda v: v != 1),
        ("gt", 1, lambda v: v > 1),
        ("gte", 2, lambda v: v >= 2),
        ("lt", 2, lambda v: v < 2),
        ("lte", 1, lambda v: v <= 1),
        ("in", [2, 4], lambda v: v in (2, 4)),
        ("notin", [1, 2], lambda v: v not in (1, 2)),
    ],
)
async def test_each_operator_filters(client: httpx.AsyncClient, op: str, value: object, check) -> None:
    everything = await search(client)
    offers = await search(client, {"num_gpus": {op: value}})
    expected = [o["id"] for o in everything if check(o["num_gpus"])]
    assert sorted(o["id"] for o in offers) == sorted(expected)
    assert expected  # the market has every case


async def test_reliability2_is_an_alias_of_reliability(client: httpx.AsyncClient) -> None:
    a = await search(client, {"reliability2": {"gte": "0.99"}})
    b = await search(client, {"reliability": {"gte": "0.99"}})
    assert a and [o["id"] for o in a] == [o["id"] for o in b]


async def test_geolocation_matches_country_codes(client: httpx.AsyncClient) -> None:
    offers = await search(client, {"geolocation": {"in": ["US", "CA"]}})
    assert offers and all(o["geolocation"].endswith((", US", ", CA")) for o in offers)
    others = await search(client, {"geolocation": {"notin": ["US", "CA"]}})
    assert len(offers) + len(others) == 80
    eq = await search(client, {"geolocation": {"eq": "US"}})
    assert {o["id"] for o in eq} <= {o["id"] for o in offers}


async def test_gpu_names_use_spaces(client: httpx.AsyncClient) -> None:
    offers = await search(client, {"gpu_name": {"in": ["RTX 4090", "RTX 3090"]}})
    assert offers and {o["gpu_name"] for o in offers} <= {"RTX 4090", "RTX 3090"}
    assert await search(client, {"gpu_name": {"eq": "RTX_4090"}}) == []


async def test_order_and_limit(client: httpx.AsyncClient) -> None:
    offers = await search(client, {"order": [["dph_total", "asc"]], "limit": 7})
    prices = [o["dph_total"] for o in offers]
    assert len(offers) == 7 and prices == sorted(prices)
    assert [o["rn"] for o in offers] == list(range(1, 8))
    by_score = await search(client, {})
    scores = [o["score"] for o in by_score]
    assert scores == sorted(scores, reverse=True)  # default order is score desc
    multi = await search(client, {"order": [["num_gpus", "desc"], ["dph_total", "asc"]]})
    keys = [(-o["num_gpus"], o["dph_total"]) for o in multi]
    assert keys == sorted(keys)


async def test_allocated_storage_feeds_storage_and_total_price(client: httpx.AsyncClient) -> None:
    small = {o["id"]: o for o in await search(client, {"allocated_storage": 5})}
    large = {o["id"]: o for o in await search(client, {"allocated_storage": 40})}
    offer_id = next(iter(set(small) & set(large)))
    s, big = small[offer_id], large[offer_id]
    assert s["storage_total_cost"] == pytest.approx(5 * s["storage_cost"] / 720)
    assert big["storage_total_cost"] == pytest.approx(40 * s["storage_cost"] / 720)
    assert s["dph_total"] == pytest.approx(s["dph_base"] + s["storage_total_cost"])
    assert big["dph_total"] > s["dph_total"]


async def test_allocated_storage_excludes_hosts_with_too_little_disk(client: httpx.AsyncClient) -> None:
    offers = await search(client, {"allocated_storage": 500})
    assert offers and all(o["disk_space"] >= 500 for o in offers)
    assert len(offers) < 80


async def test_bid_type_prices_at_min_bid(client: httpx.AsyncClient) -> None:
    ondemand = {o["id"]: o for o in await search(client, {"type": "ondemand"})}
    bids = await search(client, {"type": "bid"})
    for offer in bids:
        assert offer["is_bid"] is True
        assert offer["dph_total"] == pytest.approx(offer["min_bid"] + offer["storage_total_cost"])
        assert offer["dph_total"] < ondemand[offer["id"]]["dph_total"]
    assert all(o["is_bid"] is False for o in await search(client, {"type": "on-demand"}))
    assert await search(client, {"type": "reserved"})


async def test_invalid_type_and_operator_answer_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v0/bundles/", json={"type": "spot"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await client.post("/api/v0/bundles/", json={"num_gpus": {"approx": 1}})
    assert r.status_code == 400
    r = await client.post(
        "/api/v0/bundles/", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["msg"] == "Invalid json body"


async def test_sdk_default_filters_hide_unverified_and_external_null_counts_as_false(
    client: httpx.AsyncClient,
) -> None:
    defaults = {
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "rented": {"eq": False},
    }
    offers = await search(client, defaults)
    everything = await search(client)
    assert offers and all(o["verification"] == "verified" for o in offers)
    assert all(o["external"] is None for o in offers)  # real offers carry null, which matches eq false
    assert len(offers) == sum(1 for o in everything if o["verification"] == "verified")
    assert "verified" not in offers[0]  # a filter the server derives, not a record field
    datacenters = await search(client, {"datacenter": {"eq": True}})
    assert datacenters and all(o["hosting_type"] == 1 for o in datacenters)


async def test_rented_offer_disappears_and_rented_eq_true_shows_it_again(client: httpx.AsyncClient) -> None:
    offer = (await search(client, {"direct_port_count": {"gt": 0}, "limit": 1}))[0]
    await rent(client, offer["id"])
    assert offer["id"] not in {o["id"] for o in await search(client)}
    mine = {o["id"]: o for o in await search(client, {"rented": {"eq": True}})}
    assert mine[offer["id"]]["rented"] is True and mine[offer["id"]]["rentable"] is False
    assert len(mine) == 80  # available ones plus the one we rent


async def test_legacy_get_with_q_parameter(client: httpx.AsyncClient) -> None:
    q = json.dumps({"num_gpus": {"eq": 1}, "order": [["dph_total", "asc"]], "limit": 3})
    r = await client.get("/api/v0/bundles/", params={"q": q})
    assert r.status_code == 200
    offers = r.json()["offers"]
    assert len(offers) == 3 and all(o["num_gpus"] == 1 for o in offers)


async def test_search_without_auth_works_but_bad_key_is_401(emu: VastEmulator) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as anon:
        r = await anon.post("/api/v0/bundles/", json={"limit": 2})
        assert r.status_code == 200 and len(r.json()["offers"]) == 2
        r = await anon.post("/api/v0/bundles/", json={}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert r.json() == {"success": False, "error": "auth_error", "msg": "Invalid user key"}


async def test_custom_offers_from_make_offer() -> None:
    offers = [make_offer(id=1, gpu_name="RTX 3090", dph_base=0.2), make_offer(id=2, gpu_name="H100 SXM")]
    async with VastEmulator(offers, api_key=API_KEY) as emu, httpx.AsyncClient(base_url=emu.url) as c:
        found = await search(c, {"gpu_ram": {"gte": 80000}})
        assert [o["id"] for o in found] == [2]
        assert found[0]["gpu_ram"] == 81559
