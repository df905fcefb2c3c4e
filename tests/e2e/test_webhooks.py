"""A completion webhook whose receiver is down when the job ends arrives, signed, once it is back."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from app.jobs.webhooks import verify
from tests.e2e.conftest import b64, free_port, http_server, png_bytes, sim_api

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

SECRET = "whsec_ZTJlLXdlYmhvb2stc2VjcmV0LWtleS0xMjM0NTY="


async def test_webhook_receiver_down_then_up_gets_the_signed_message(tmp_path):
    port = free_port()  # nothing listens here until the receiver "comes back"
    hook_url = f"http://127.0.0.1:{port}/hooks/video"
    received: list[tuple[dict[str, str], bytes]] = []
    got = asyncio.Event()

    async def receiver(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        got.set()
        return web.Response(status=204)

    async with sim_api(tmp_path / "data", webhook_secret=SECRET) as sim:
        job = await sim.submit(
            {
                "image_base64": b64(png_bytes()),
                "prompt": "gulls",
                "num_frames": 9,
                "width": 256,
                "height": 256,
                "webhook_url": hook_url,
            }
        )
        job_id = job["job_id"]
        done = await sim.finished(job_id)
        assert done["state"] == "succeeded", done["error"]

        # The first attempt finds nothing listening: the delivery stays pending with a retry scheduled.
        job = await sim.wait_job(job_id, lambda j: (j["webhook"] or {}).get("attempts", 0) >= 1)
        assert job["webhook"]["status"] == "pending"

        async with http_server({"/hooks/video": receiver}, port=port, method="POST"):
            await asyncio.wait_for(got.wait(), 15)
            job = await sim.wait_job(job_id, lambda j: j["webhook"]["status"] == "delivered")
        assert job["webhook"]["attempts"] >= 2

    [(headers, body)] = received  # delivered exactly once
    assert verify(SECRET, headers, body)
    assert not verify("whsec_" + "A" * 44, headers, body)  # it is really our key that signed it
    assert not verify(SECRET, headers, body.replace(b"succeeded", b"failed"))
    msg = json.loads(body)
    assert msg["type"] == "job.succeeded"
    assert msg["data"]["job_id"] == job_id and msg["data"]["state"] == "succeeded"
    assert msg["data"]["result"]["video_url"] == done["result"]["video_url"]
    assert headers["webhook-id"] == f"msg_{job_id}_succeeded"
