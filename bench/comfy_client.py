"""Benchmark: comfyfleet's ComfyUI client vs the PyPI peer `comfy-api-simplified`, side by side.

Both drive the same ComfyUI emulator (a separate process, zero step delay) with the same small Wan graph
(unique seed + prefix per job, so nothing is served from cache), job by job in alternation.
- overhead per job = (submit .. outputs on disk) - the emulator's own execution time, taken from its
  /history timestamps (execution_start .. execution_success); p50/p95 over --jobs jobs.
- peak RSS growth of THIS (client) process while one job's 500 MB output is fetched to disk.

    python bench/comfy_client.py [--jobs 30] [--pad-mb 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from app.comfy import ComfyClient  # noqa: E402
from tests.comfy.world import VIDEO_NODE, make_start_image, make_wan_comfy_dir, wan_graph  # noqa: E402

_CHILD = """
import asyncio, json, sys
from pathlib import Path
from app.sim.comfyui import ComfyEmulator
sys.path.insert(0, sys.argv[2])
from tests.comfy.world import object_info

async def main():
    emu = ComfyEmulator(Path(sys.argv[1]), object_info=object_info(), step_delay_s=0.0)
    url = await emu.start("127.0.0.1", 0)
    print(url, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_emulator(comfy_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(comfy_dir), str(REPO_ROOT)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"emulator did not start: {url!r}")
    return proc, url


def set_faults(url: str, **values: Any) -> None:
    httpx.post(f"{url}/__sim/faults", json=values, timeout=10).raise_for_status()


def exec_seconds_of_prefix(url: str, prefix: str) -> float:
    """The emulator's execution time of the prompt that wrote `prefix` (for the peer, which hides ids)."""
    history = httpx.get(f"{url}/history", params={"max_items": 3}, timeout=10).json()
    for entry in history.values():
        graph = entry["prompt"][2]
        if graph.get(VIDEO_NODE, {}).get("inputs", {}).get("filename_prefix") == prefix:
            stamps = {ev: data["timestamp"] for ev, data in entry["status"]["messages"]}
            return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0
    raise RuntimeError(f"no history entry for {prefix}")


class RssPeak:
    """Samples this process's RSS in a thread; `growth` = peak - baseline at start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssPeak:
        gc.collect()
        self.baseline = self.proc.memory_info().rss
        self.peak = self.baseline
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


# --- comfyfleet ------------------------------------------------------------------------------------
async def ours_one(comfy: ComfyClient, image: str, dest: Path) -> float:
    graph = wan_graph(image, prefix=f"bench/ours_{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    result = await comfy.run(graph, deadline=time.monotonic() + 120)
    paths = await comfy.download_outputs(result, dest)
    elapsed = time.perf_counter() - t0
    assert result.execution_s is not None and paths and paths[0].stat().st_size > 0
    for p in paths:
        p.unlink()
    return elapsed - result.execution_s


async def ours_big(url: str, image: str, dest: Path) -> tuple[float, int]:
    async with ComfyClient(url, timeout=120) as comfy:
        graph = wan_graph(image, prefix=f"bench/big_ours_{uuid.uuid4().hex[:8]}")
        # the emulator pads the file while "executing"; measure only our side of it
        with RssPeak() as rss:
            result = await comfy.run(graph, deadline=time.monotonic() + 600)
            [path] = await comfy.download_outputs(result, dest)
        size = path.stat().st_size
        path.unlink()
    return rss.growth_mb, size


# --- comfy-api-simplified --------------------------------------------------------------------------
def peer_job(api: Any, graph: dict[str, Any], dest: Path) -> list[Path]:
    from comfy_api_simplified import ComfyWorkflowWrapper

    files = api.queue_and_wait_images(ComfyWorkflowWrapper(graph), "Video Combine (VHS)")
    paths = []
    for name, content in files.items():
        path = dest / name
        path.write_bytes(content)
        paths.append(path)
    return paths


def peer_one(api: Any, url: str, image: str, dest: Path) -> float:
    prefix = f"bench/peer_{uuid.uuid4().hex[:8]}"
    graph = wan_graph(image, prefix=prefix)
    t0 = time.perf_counter()
    paths = peer_job(api, graph, dest)
    elapsed = time.perf_counter() - t0
    assert paths and paths[0].stat().st_size > 0
    for p in paths:
        p.unlink()
    return elapsed - exec_seconds_of_prefix(url, prefix)


def interleaved(url: str, image: str, n: int, dest: Path) -> tuple[list[float], list[float]]:
    """Alternate the two clients job by job (order flipped each round) so both see the same machine load.

    comfyfleet runs on an event loop in its own thread (as in the service); the peer is synchronous (it
    calls asyncio.run itself) and runs in the main thread.
    """
    from comfy_api_simplified import ComfyApiWrapper

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    comfy = ComfyClient(url, timeout=60)
    on_loop(comfy.__aenter__())
    api = ComfyApiWrapper(url)
    ours: list[float] = []
    peer: list[float] = []
    try:
        for i in range(n + 2):  # two warm-up rounds
            runs = [
                lambda: ("ours", on_loop(ours_one(comfy, image, dest))),
                lambda: ("peer", peer_one(api, url, image, dest)),
            ]
            for run in runs if i % 2 == 0 else runs[::-1]:
                who, overhead = run()
                if i >= 2:
                    (ours if who == "ours" else peer).append(overhead)
    finally:
        on_loop(comfy.aclose())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    return ours, peer


def peer_big(url: str, image: str, dest: Path) -> tuple[float, int]:
    from comfy_api_simplified import ComfyApiWrapper

    api = ComfyApiWrapper(url)
    graph = wan_graph(image, prefix=f"bench/big_peer_{uuid.uuid4().hex[:8]}")
    with RssPeak() as rss:
        paths = peer_job(api, graph, dest)
    size = paths[0].stat().st_size
    for p in paths:
        p.unlink()
    return rss.growth_mb, size


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(label: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    print(f"  {label}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--pad-mb", type=int, default=500, help="size of the big output (0 = skip the RSS part)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="comfy-bench-") as tmp:
        root = Path(tmp)
        comfy_dir = make_wan_comfy_dir(root / "ComfyUI")
        make_start_image(comfy_dir / "input" / "bench_start.png")
        dest = root / "downloads"
        dest.mkdir()
        proc, url = start_emulator(comfy_dir)
        try:
            print(f"emulator {url} (pid {proc.pid}), {args.jobs} jobs each, step delay 0", file=sys.stderr)
            image = "bench_start.png"
            ours, peer = timed("interleaved jobs", lambda: interleaved(url, image, args.jobs, dest))
            rss_rows = []
            if args.pad_mb:
                set_faults(url, video_pad_bytes=args.pad_mb * 1_000_000)
                ours_rss, size = asyncio.run(ours_big(url, image, dest))
                # the peer holds the whole file in memory: measured last, after ours
                peer_rss, peer_size = peer_big(url, image, dest)
                rss_rows = [("comfyfleet", ours_rss, size), ("comfy-api-simplified", peer_rss, peer_size)]
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    print()
    print(f"per-job overhead (submit -> outputs on disk, minus emulator execution), {args.jobs} jobs")
    print(f"{'client':<24}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for name, vals in (("comfyfleet", ours), ("comfy-api-simplified", peer)):
        ms = [v * 1000 for v in vals]
        print(f"{name:<24}{statistics.median(ms):>10.1f}{pct(ms, 0.95):>10.1f}{statistics.fmean(ms):>10.1f}")
    if rss_rows:
        print()
        print(f"peak RSS growth of the client process, one {args.pad_mb} MB output")
        print(f"{'client':<24}{'RSS MB':>10}{'file MB':>10}")
        for name, growth, size in rss_rows:
            print(f"{name:<24}{growth:>10.1f}{size / 1e6:>10.1f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
