"""The simulated model host honours Range exactly and caps bandwidth."""

from __future__ import annotations

import hashlib
import time

import httpx

from app.sim.modelserver import FileSpec, ModelServer


async def test_range_requests_answer_206_and_416(model_server):
    f = model_server.file("vae.safetensors")
    url = model_server.mirror_url("vae.safetensors")
    async with httpx.AsyncClient() as client:
        full = await client.get(url)
        assert full.status_code == 200 and hashlib.sha256(full.content).hexdigest() == f.sha256
        part = await client.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == full.content[100:200]
        assert part.headers["Content-Range"] == f"bytes 100-199/{f.size}"
        past = await client.get(url, headers={"Range": f"bytes={f.size}-"})
        assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{f.size}"
    assert [r.range for r in model_server.log] == [None, "bytes=100-199", f"bytes={f.size}-"]


async def test_bandwidth_cap_is_shared_by_connections(tmp_path):
    server = ModelServer(
        tmp_path,
        [FileSpec("a", "x.bin", 2_000_000), FileSpec("a", "y.bin", 2_000_000)],
        bandwidth_bps=8_000_000,
        burst_s=0.02,  # 512 KiB (two chunks)
    )
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            import asyncio

            t0 = time.monotonic()
            await asyncio.gather(
                client.get(server.mirror_url("x.bin")), client.get(server.mirror_url("y.bin"))
            )
            elapsed = time.monotonic() - t0
    finally:
        await server.stop()
    assert 0.38 <= elapsed <= 0.9  # (4 MB - 0.5 MiB burst) at 8 MB/s = 0.43 s
