"""Control-plane overhead of the jobs room:
python bench/jobs_overhead.py [--emulator] [--jobs 1000] [--database sqlite|postgresql|both]

What it measures, with every far end answering instantly (fake GPUs with zero step delay, or with
--emulator the real ComfyClient against the ComfyUI emulator with zero step delay):
  1. per-job overhead (submit -> succeeded, minus the GPU's own execution time), p50/p95, at concurrency 1
     and 32 (32 warm instances, so jobs do not queue behind each other);
  2. the GPU idle gap between two jobs queued on one instance (end of prompt A -> start of prompt B);
  3. N jobs across 20 instances: none lost, and the process RSS at the end.
Real database (SQLite file with WAL, or with --database postgresql a throwaway local PostgreSQL server,
as the tests start it; `both` runs the two side by side), real pool, runner, result cache and store code;
cache misses only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from app.config import Settings
from app.db import make_sessionmaker
from app.jobs.services import assemble
from app.pool.ports import ComfyTarget
from tests.jobs.fakes import (
    FakeComfy,
    FakeLedger,
    FakePreparer,
    FakeProvider,
    FakeStore,
    png_bytes,
    workflow_loader,
)
from tests.jobs.harness import create_tables


class _EmulatorPreparer:
    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.n = 0

    async def prepare(self, instance, workflow, on_progress):
        url = self.urls[int(instance.id.lstrip("i")) % len(self.urls)]
        return ComfyTarget(url)

    async def release(self, instance):
        return None


# Where each measurement's fresh database comes from: root -> URL (set by main for the kind measured).
new_database_url = None


def sqlite_url(root: Path) -> str:
    return f"sqlite+aiosqlite:///{root / 'jobs.db'}"


@contextlib.asynccontextmanager
async def services(root: Path, *, instances: int, emulator: bool):
    settings = Settings(
        data_dir=root / "data",
        cleanup_interval_s=0,
        pool_max_instances=instances,
        spend_cap_usd=10_000,
        job_timeout_s=600,
        webhook_secret=None,
    )
    engine = await create_tables((new_database_url or sqlite_url)(root))
    provider = FakeProvider(price=0.4)
    provider.ledger = FakeLedger()
    emus = []
    if emulator:
        from app.jobs.wiring import comfy_connector
        from app.sim.comfyui import ComfyEmulator
        from app.store.local import LocalStore
        from app.workflows import get_workflow
        from tests.comfy.world import make_wan_comfy_dir, object_info

        for i in range(min(instances, 4)):
            emu = ComfyEmulator(
                make_wan_comfy_dir(root / f"ComfyUI{i}"), object_info=object_info(), step_delay_s=0.0
            )
            await emu.start("127.0.0.1", 0)
            emus.append(emu)
        comfy, preparer = comfy_connector(), _EmulatorPreparer([e.url for e in emus])
        store = LocalStore(root / "results", "http://127.0.0.1:8000")

        def workflows(name):
            return get_workflow(name, settings)
    else:
        comfy, preparer = FakeComfy(), FakePreparer()
        store = FakeStore(root / "store")
        workflows = workflow_loader()
    svc = assemble(
        settings,
        sessionmaker=make_sessionmaker(engine),
        provider=provider,
        preparer=preparer,
        comfy=comfy,
        store=store,
        workflows=workflows,
        ledger=provider.ledger,
        engine=engine,
    )
    await svc.start()
    try:
        yield svc, comfy
    finally:
        await svc.stop()
        for emu in emus:
            await emu.stop()


def image(seed: int) -> bytes:
    """The client's upload (made before the clock starts: encoding it is not the server's work)."""
    return png_bytes(64, 64, (seed % 255, 10, 10))


async def one_job(svc, seed: int, emulator: bool, data: bytes | None = None) -> float:
    """Request bytes in -> job succeeded, minus GPU time. The server's intake (decode, hash, store the
    input) is inside the measurement, as it is in `POST /vastai/generate-video`."""
    data = image(seed) if data is None else data
    raw = {"prompt": "bench", "seed": seed, "num_frames": 9 if emulator else 5, "width": 256, "height": 256}
    t0 = time.perf_counter()
    img = await svc.intake.from_bytes(data, "image_base64")
    job = await svc.submit(raw, img)
    job = await svc.manager.wait(job.id, 300)
    wall = time.perf_counter() - t0
    assert job.state == "succeeded", (job.state, job.error_message)
    return wall - float(job.result["timings"].get("gpu_s", 0.0))


async def warm(svc, n: int, emulator: bool) -> None:
    await asyncio.gather(*(one_job(svc, 10_000_000 + i, emulator) for i in range(n)))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def overhead(root: Path, concurrency: int, rounds: int, emulator: bool) -> tuple[list[float], float]:
    """Per-job overheads, and the process CPU seconds per job (all threads) over the same rounds."""
    async with services(root, instances=max(1, concurrency), emulator=emulator) as (svc, _):
        await warm(svc, max(1, concurrency) * 2, emulator)  # rent + prepare every instance first
        out: list[float] = []
        seed = 0
        cpu0 = time.process_time()
        for _ in range(rounds):
            images = [image(seed + i) for i in range(concurrency)]
            batch = await asyncio.gather(
                *(one_job(svc, seed + i, emulator, images[i]) for i in range(concurrency))
            )
            seed += concurrency
            out.extend(batch)
        return out, (time.process_time() - cpu0) / len(out)


async def idle_gap(root: Path) -> list[float]:
    gaps: list[float] = []
    async with services(root, instances=1, emulator=False) as (svc, comfy):
        await warm(svc, 1, False)
        for gpu in comfy.gpus.values():
            gpu.step_delay = 0.02  # long enough that B is queued while A runs
        for r in range(10):
            await asyncio.gather(one_job(svc, 1000 + 2 * r, False), one_job(svc, 1001 + 2 * r, False))
        gpu = next(iter(comfy.gpus.values()))
        ex = sorted(gpu.executions[-20:], key=lambda e: e[1])
        gaps = [b[1] - a[2] for a, b in zip(ex[::2], ex[1::2], strict=False)]
    return gaps


async def many(root: Path, n: int) -> tuple[int, int, float]:
    async with services(root, instances=20, emulator=False) as (svc, _):
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(one_job(svc, 50_000 + i, False) for i in range(n)), return_exceptions=True
        )
        dt = time.perf_counter() - t0
        ok = sum(1 for r in results if not isinstance(r, BaseException))
        counts = await svc.repo.counts_by_state()
        return ok, counts["succeeded"], dt


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emulator", action="store_true", help="real ComfyClient + ComfyUI emulator")
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument(
        "--tmp",
        default=None,
        help="where the data dir, database and store go (default: the system temp dir); e.g. /dev/shm "
        "to take the disk's file-creation cost out of the numbers",
    )
    ap.add_argument(
        "--database",
        choices=("sqlite", "postgresql", "both"),
        default="sqlite",
        help="the job database; postgresql starts a throwaway local server (Debian's package)",
    )
    args = ap.parse_args()
    print("load average before: {:.2f} {:.2f} {:.2f} ({} CPUs)".format(*os.getloadavg(), os.cpu_count()))
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    global new_database_url
    for kind in kinds:
        server = None
        if kind == "postgresql":
            from tests.support.postgres import PostgresServer

            server = PostgresServer.start()
            new_database_url = lambda _root, s=server: s.url(s.create_database(prefix="bench"))  # noqa: E731
        else:
            new_database_url = sqlite_url
        try:
            print(f"--- database: {kind}")
            await measure(args, kind)
        finally:
            if server is not None:
                server.stop()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


async def measure(args, kind: str) -> None:
    mode = ("ComfyClient+emulator" if args.emulator else "fake GPUs") + f", {kind}"
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        for c in (1, 32):
            rounds = args.rounds if c == 1 else max(3, args.rounds // 10)
            values, cpu = await overhead(root / f"c{c}", c, rounds, args.emulator)
            print(
                f"overhead per job ({mode}), concurrency {c:>2}: "
                f"p50 {statistics.median(values) * 1000:6.1f} ms  "
                f"p95 {pct(values, 0.95) * 1000:6.1f} ms  (n={len(values)}; CPU {cpu * 1000:.1f} ms/job)"
            )
        gaps = await idle_gap(root / "gap")
        print(
            f"GPU idle gap between two queued jobs on one instance: "
            f"p50 {statistics.median(gaps) * 1000:.2f} ms  max {max(gaps) * 1000:.2f} ms  (n={len(gaps)})"
        )
        ok, succeeded, dt = await many(root / "many", args.jobs)
        rss = psutil.Process().memory_info().rss / 2**20
        print(
            f"{args.jobs} jobs across 20 instances: {ok} ok, {succeeded} succeeded in the DB, "
            f"{args.jobs - ok} lost, {dt:.1f} s ({args.jobs / dt:.0f} jobs/s), RSS {rss:.0f} MB"
        )


if __name__ == "__main__":
    asyncio.run(main())
