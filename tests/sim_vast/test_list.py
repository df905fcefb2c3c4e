"""`GET /api/v1/instances/` paging and filters; the v0 list answers 410."""

from __future__ import annotations

import base64
import json

import httpx

from tests.sim_vast.conftest import cheapest_ids, rent


async def _fleet(client: httpx.AsyncClient, n: int) -> list[int]:
    ids = []
    for i, offer_id in enumerate(await cheapest_ids(client, n)):
        ids.append(await rent(client, offer_id, label=f"comfyfleet-test-{i % 3}"))
    return ids


async def _page(client: httpx.AsyncClient, **params: object) -> httpx.Response:
    encoded = {k: v if isinstance(v, str | int) else json.dumps(v) for k, v in params.items()}
    return await client.get("/api/v1/instances/", params=encoded)


async def test_v0_list_is_410_deprecated(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v0/instances/")
    assert r.status_code == 410
    assert r.json() == {
        "success": False,
        "error": "deprecated_endpoint",
        "msg": "/api/v0/instances/ is deprecated. Use /api/v1/instances/ instead.",
    }


async def test_paging_follows_next_token_across_pages(client: httpx.AsyncClient) -> None:
    ids = await _fleet(client, 30)
    first = (await _page(client)).json()
    assert first["success"] is True and len(first["instances"]) == 25
    assert first["total_instances"] == 30 and first["instances_found"] == 30
    assert first["next_token"]
    second = (await _page(client, after_token=first["next_token"])).json()
    assert len(second["instances"]) == 5 and second["next_token"] is None
    seen = [i["id"] for i in first["instances"] + second["instances"]]
    assert seen == sorted(ids)
    assert json.loads(base64.b64decode(first["next_token"]))["values"]["id"] == seen[24]


async def test_limit_is_capped_at_25_and_nonpositive_means_5(client: httpx.AsyncClient) -> None:
    await _fleet(client, 27)
    assert len((await _page(client, limit=100)).json()["instances"]) == 25
    assert len((await _page(client, limit=0)).json()["instances"]) == 5
    assert len((await _page(client, limit=3)).json()["instances"]) == 3


async def test_invalid_after_token_is_400(client: httpx.AsyncClient) -> None:
    await _fleet(client, 2)
    for token in ("not-a-token!", base64.b64encode(b'{"nope": 1}').decode()):
        r = await _page(client, after_token=token)
        assert r.status_code == 400 and r.json()["success"] is False


async def test_select_filters_on_label_status_and_id(client: httpx.AsyncClient) -> None:
    ids = await _fleet(client, 6)
    by_label = (await _page(client, select_filters={"label": {"eq": "comfyfleet-test-1"}})).json()
    assert [i["id"] for i in by_label["instances"]] == [ids[1], ids[4]]
    assert by_label["instances_found"] == 2 and by_label["total_instances"] == 6
    running = (await _page(client, select_filters={"actual_status": {"in": ["running", "loading"]}})).json()
    assert len(running["instances"]) == 6
    one = (await _page(client, select_filters={"id": {"eq": ids[2]}})).json()
    assert [i["id"] for i in one["instances"]] == [ids[2]]


async def test_filter_on_computed_field_is_400(client: httpx.AsyncClient) -> None:
    await _fleet(client, 1)
    for col in ("dph_total", "num_gpus"):
        r = await _page(client, select_filters={col: {"lt": 1}})
        assert r.status_code == 400 and col in r.json()["msg"]


async def test_label_counts_and_order_by_desc(client: httpx.AsyncClient) -> None:
    ids = await _fleet(client, 5)
    body = (await _page(client, order_by=[{"col": "id", "dir": "desc"}])).json()
    assert body["label_counts"] == {"comfyfleet-test-0": 2, "comfyfleet-test-1": 2, "comfyfleet-test-2": 1}
    assert [i["id"] for i in body["instances"]] == sorted(ids, reverse=True)
    assert (await _page(client, order_by=[{"col": "dph_total", "dir": "asc"}])).status_code == 400


async def test_select_cols_projects_rows(client: httpx.AsyncClient) -> None:
    await _fleet(client, 2)
    body = (await _page(client, select_cols=["id", "label", "nonexistent"])).json()
    assert all(
        set(row) == {"id", "label", "nonexistent"} and row["nonexistent"] is None for row in body["instances"]
    )


async def test_destroyed_instances_leave_the_list(client: httpx.AsyncClient) -> None:
    ids = await _fleet(client, 3)
    await client.delete(f"/api/v0/instances/{ids[0]}/")
    body = (await _page(client)).json()
    assert [i["id"] for i in body["instances"]] == ids[1:] and body["total_instances"] == 2


async def test_paging_by_label_desc_with_unlabelled_instances(client: httpx.AsyncClient) -> None:
    offer_ids = await cheapest_ids(client, 30)
    ids = [await rent(client, oid, label=None if i % 2 else f"l-{i:02d}") for i, oid in enumerate(offer_ids)]
    seen, token = [], None
    while True:
        params = {"order_by": [{"col": "label", "dir": "desc"}], "limit": 7}
        if token:
            params["after_token"] = token
        body = (await _page(client, **params)).json()
        seen += [(i["label"], i["id"]) for i in body["instances"]]
        token = body["next_token"]
        if not token:
            break
    assert sorted(i for _, i in seen) == sorted(ids)  # every instance exactly once
    labels = [label for label, _ in seen]
    named = [x for x in labels if x is not None]
    assert named == sorted(named, reverse=True) and labels[len(named) :] == [None] * (30 - len(named))
