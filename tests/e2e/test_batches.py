"""A batch of 20 requests spreads over 4 rented instances, and its receiver gets exactly one signed webhook
when the last job has ended."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from app.jobs.webhooks import verify
from tests.e2e.conftest import b64, eventually, http_server, png_bytes, sim_api

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

SECRET = "batch-webhook-secret-0123456789"


async def test_twenty_request_batch_runs_across_four_instances_with_one_webhook(tmp_path):
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    image = b64(png_bytes())
    async with (
        http_server({"/hook": hook}, method="POST") as origin,
        sim_api(tmp_path / "data", pool_max_instances=4, sim_step_delay_s=0.1, webhook_secret=SECRET) as sim,
    ):
        requests = [
            {
                "image_base64": image,
                "prompt": f"shot {i}",
                "num_frames": 9,
                "width": 256,
                "height": 256,
                "seed": i,
            }
            for i in range(20)
        ]
        r = await sim.client.post(
            "/vastai/generate-video/batch", json={"requests": requests, "webhook_url": f"{origin}/hook"}
        )
        assert r.status_code == 202, r.text
        batch = r.json()
        assert batch["total"] == 20 and len(batch["jobs"]) == 20 and batch["state"] == "running"
        batch_id = batch["batch_id"]

        async def ended() -> bool:
            b = (await sim.client.get(f"/batches/{batch_id}")).json()
            return b["state"] == "ended" and (b["webhook"] or {}).get("status") == "delivered"

        await eventually(ended, within_s=120, what="the batch to end and its webhook to be delivered")
        batch = (await sim.client.get(f"/batches/{batch_id}")).json()
        assert batch["counts"]["succeeded"] == 20
        assert [j["params"]["seed"] for j in batch["jobs"]] == list(range(20))  # request order kept
        used = {j["result"]["instance_id"] for j in batch["jobs"]}
        assert len(used) == 4, used  # spread over the pool, renting up to its maximum
        assert sim.instances_ever_created() == 4

        [(headers, body)] = received  # one message for the whole batch
        assert verify(SECRET, headers, body)
        message = json.loads(body)
        assert message["type"] == "batch.ended" and headers["webhook-id"] == f"msg_{batch_id}_ended"
        data = message["data"]
        assert data["batch_id"] == batch_id and data["counts"]["succeeded"] == 20
        assert all(j["result"]["video_url"] for j in data["jobs"])
