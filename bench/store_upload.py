"""Upload a 1 GB file to a real S3 server (SeaweedFS on loopback) through R2Store.

Checks the claim that uploads stream from disk: peak RSS growth of this process during the upload must
stay under 64 MB, whatever the file size. Reports throughput.

    python bench/store_upload.py [--size-mb 1024] [--part-mb 16] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.store.r2 import MB, R2Store
from tests.support.seaweedfs import SeaweedFS

RSS_LIMIT_MB = 64


class RssSampler(threading.Thread):
    """Samples this process's RSS every `interval` seconds; `peak` is the highest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.samples += 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def make_file(path: Path, size: int) -> None:
    block = bytearray(os.urandom(MB))
    with path.open("wb") as f:
        for i in range(size // MB):
            block[:8] = i.to_bytes(8, "little")  # every MB differs
            f.write(block)
        f.write(os.urandom(size % MB))


async def bench(s3: SeaweedFS, src: Path, part: int, concurrency: int) -> dict:
    bucket = s3.new_bucket("bench")
    store = R2Store(
        bucket=bucket,
        endpoint_url=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
        multipart_threshold=part,
        part_size=part,
        upload_concurrency=concurrency,
    )
    size = src.stat().st_size  # noqa: ASYNC240 - before timing starts
    proc = psutil.Process()
    base = proc.memory_info().rss
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    obj = await store.put(src, "bench/video.mp4", "video/mp4", {"job-id": "bench"})
    elapsed = time.perf_counter() - t0
    sampler.stop()
    await store.close()
    assert obj.size == size, (obj.size, size)
    return {
        "size_mb": size / MB,
        "seconds": elapsed,
        "throughput_mb_s": size / MB / elapsed,
        "etag": obj.etag,
        "rss_base_mb": base / MB,
        "rss_peak_mb": sampler.peak / MB,
        "rss_growth_mb": (sampler.peak - base) / MB,
        "samples": sampler.samples,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--part-mb", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        src = Path(tmp) / "big.mp4"
        t = time.perf_counter()
        make_file(src, args.size_mb * MB)
        print(f"made {args.size_mb} MB test file in {time.perf_counter() - t:.1f}s")
        with SeaweedFS.running(Path(tmp)) as s3:
            r = asyncio.run(bench(s3, src, args.part_mb * MB, args.concurrency))
    print(
        f"upload {r['size_mb']:.0f} MB, parts {args.part_mb} MB x{args.concurrency}: {r['seconds']:.2f}s "
        f"= {r['throughput_mb_s']:.0f} MB/s, etag {r['etag']}"
    )
    print(
        f"RSS base {r['rss_base_mb']:.1f} MB, peak {r['rss_peak_mb']:.1f} MB, "
        f"growth {r['rss_growth_mb']:.1f} MB ({r['samples']} samples; limit {RSS_LIMIT_MB} MB)"
    )
    ok = r["rss_growth_mb"] < RSS_LIMIT_MB
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
