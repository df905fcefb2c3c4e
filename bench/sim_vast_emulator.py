"""Latency of the Vast.ai emulator itself (200 offers, 50 instances, time_scale 0), so control-plane
benchmarks can subtract it. Run: python bench/sim_vast_emulator.py"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx

from app.sim.vast import VastEmulator, default_market

KEY = "bench-key"
QUERY = {
    "verified": {"eq": True},
    "rentable": {"eq": True},
    "rented": {"eq": False},
    "gpu_ram": {"gte": 24000},
    "reliability": {"gt": "0.98"},
    "direct_port_count": {"gte": "2"},
    "order": [["dph_total", "asc"]],
    "allocated_storage": 60,
}


async def timed(n: int, fn) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[int(len(ms) * 0.95) - 1]
    print(f"{name:<28} n={len(ms):<4} p50={statistics.median(ms):7.2f} ms  p95={p95:7.2f} ms")


async def main() -> None:
    emu = VastEmulator(default_market(250, seed=0), api_key=KEY, time_scale=0.0)
    await emu.start()
    async with httpx.AsyncClient(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
        offers = (await c.post("/api/v0/bundles/", json={"order": [["dph_total", "asc"]]})).json()["offers"]
        create_ms: list[float] = []
        ids: list[int] = []
        for offer in offers[:50]:
            t0 = time.perf_counter()
            r = await c.put(
                f"/api/v0/asks/{offer['id']}/", json={"image": "img", "disk": 40, "runtype": "ssh_direc"}
            )
            create_ms.append((time.perf_counter() - t0) * 1000)
            ids.append(r.json()["new_contract"])
        print(f"market: 200 available offers, {len(ids)} instances")
        report("search (POST /bundles/)", await timed(50, lambda: c.post("/api/v0/bundles/", json=QUERY)))
        report("create (PUT /asks/)", create_ms)
        report("show (GET /instances/{id})", await timed(100, lambda: c.get(f"/api/v0/instances/{ids[0]}/")))
        filt = {"select_filters": json.dumps({"label": {"eq": "x"}})}
        report("list v1 (2 pages of 25)", await timed(50, lambda: c.get("/api/v1/instances/")))
        report("list v1 by label", await timed(50, lambda: c.get("/api/v1/instances/", params=filt)))
    await emu.stop()


if __name__ == "__main__":
    asyncio.run(main())
