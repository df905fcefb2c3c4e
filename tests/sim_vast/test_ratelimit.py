"""Per-endpoint, per-identity rate limits and the daily search quota."""

from __future__ import annotations

import datetime as dt

import httpx

from app.sim.vast import VastEmulator, default_market
from tests.sim_vast.conftest import API_KEY


async def test_calls_faster_than_the_threshold_get_plain_text_429() -> None:
    async with (
        VastEmulator(default_market(5), api_key=API_KEY, rate_limits={"show": 60.0}) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        assert (await c.get("/api/v0/instances/1/")).status_code == 200
        r = await c.get("/api/v0/instances/1/")
        assert r.status_code == 429 and r.text == "API requests too frequent endpoint threshold=60"
        assert "Retry-After" not in r.headers
        assert (await c.get("/api/v1/instances/")).status_code == 200  # other endpoints are separate
        async with httpx.AsyncClient(base_url=emu.url, params={"api_key": API_KEY}) as other:
            # a different identity (query key instead of bearer) has its own budget
            assert (await other.get("/api/v0/instances/1/")).status_code == 200


async def test_real_thresholds_when_enabled() -> None:
    async with (
        VastEmulator(default_market(5), api_key=API_KEY, rate_limits=True) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        await c.delete("/api/v0/instances/1/")
        r = await c.delete("/api/v0/instances/1/")
        assert r.status_code == 429 and r.text.endswith("threshold=3")


async def test_retry_after_header_when_enabled() -> None:
    async with (
        VastEmulator([], api_key=API_KEY, rate_limits={"list": 30.0}, send_retry_after=True) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        await c.get("/api/v1/instances/")
        r = await c.get("/api/v1/instances/")
        assert r.status_code == 429 and 29.0 < float(r.headers["Retry-After"]) <= 30.0


async def test_daily_search_quota_exceeded() -> None:
    async with (
        VastEmulator(default_market(5), api_key=API_KEY, search_quota=2) as emu,
        httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {API_KEY}"}) as c,
    ):
        for _ in range(2):
            assert (await c.post("/api/v0/bundles/", json={})).status_code == 200
        r = await c.post("/api/v0/bundles/", json={})
        assert r.status_code == 429 and r.json()["error"] == "search_quota_exceeded"
        reset = dt.datetime.fromtimestamp(int(r.headers["X-RateLimit-Reset"]), dt.UTC)
        assert reset.hour == 0 and reset.minute == 0 and reset > dt.datetime.now(dt.UTC)
