"""How fast a cache hit answers, server side: `ResultCache.lookup` for a stored result.

Against SeaweedFS through R2Store (two parallel HEADs + presigning) and against the LocalStore.
Target: p50 under 20 ms.

    python bench/store_cache_hit.py [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.store import LocalStore, R2Store, ResultCache, cache_key, seedless_key
from tests.support.seaweedfs import SeaweedFS

TARGET_P50_MS = 20.0
IMG = hashlib.sha256(b"bench image").hexdigest()
PARAMS = {"prompt": "a cat surfing", "num_frames": 81, "width": 832, "height": 480, "steps": 4}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def measure(name: str, cache: ResultCache, tmp: Path, n: int) -> float:
    key = cache_key("wan", "0" * 64, PARAMS, IMG, 42)
    video, frame = tmp / f"{name}.mp4", tmp / f"{name}.png"
    video.write_bytes(os.urandom(2 * 1024 * 1024))
    frame.write_bytes(os.urandom(300_000))
    await cache.save(
        key,
        video=video,
        last_frame=frame,
        workflow="wan",
        seed=42,
        frames=81,
        fps=16,
        width=832,
        height=480,
        simulated=True,
        seedless=seedless_key("wan", "0" * 64, PARAMS, IMG),
    )
    for _ in range(10):  # warm connections
        assert await cache.lookup(key) is not None
    hits, misses = [], []
    for i in range(n):
        t = time.perf_counter()
        hit = await cache.lookup(key)
        hits.append((time.perf_counter() - t) * 1000)
        assert hit is not None and hit.seed == 42
        t = time.perf_counter()
        miss = await cache.lookup(cache_key("wan", "0" * 64, PARAMS, IMG, 1000 + i))
        misses.append((time.perf_counter() - t) * 1000)
        assert miss is None
    print(
        f"{name:>10} hit  p50 {statistics.median(hits):6.2f} ms  p95 {pct(hits, 95):6.2f} ms  "
        f"max {max(hits):6.2f} ms  (n={n})"
    )
    print(f"{name:>10} miss p50 {statistics.median(misses):6.2f} ms  p95 {pct(misses, 95):6.2f} ms")
    return statistics.median(hits)


async def run(n: int) -> bool:
    ok = True
    with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp_s:
        tmp = Path(tmp_s)
        with SeaweedFS.running(tmp) as s3:
            store = R2Store(
                bucket=s3.new_bucket("bench"),
                endpoint_url=s3.endpoint,
                access_key_id=s3.access_key,
                secret_access_key=s3.secret_key,
            )
            ok &= await measure("seaweedfs", ResultCache(store), tmp, n) < TARGET_P50_MS
            await store.close()
        local = LocalStore(tmp / "local", "http://127.0.0.1:8000")
        ok &= await measure("local", ResultCache(local), tmp, n) < TARGET_P50_MS
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ok = asyncio.run(run(ap.parse_args().n))
    print(f"target p50 < {TARGET_P50_MS} ms: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
