"""Replicas under fire, and replicas at full speed.

  python bench/chaos.py soak --jobs 500 --replicas 2 --kills 5 --seed 1
  python bench/chaos.py throughput --jobs 1000 --instances 20

soak: one simulated world (started in this process, so every fault switch is in reach: the Vast
emulator's, each instance's ComfyUI emulator's, the model server's per-file switches, the result store's
(puts failing with a 503, refused, or hanging past STORE_PUT_TIMEOUT_S), and a webhook receiver that
goes down), N `comfyfleet serve` replicas as real processes on one throwaway PostgreSQL
server, N jobs submitted over HTTP to random live replicas, faults injected at random (seeded) from every
switch while it runs, and replicas SIGKILLed and started again now and then. At the end it checks and
prints the invariants: every job ended (succeeded, or failed with a kind and a message), no instance
alive that the ledger does not know and none known alive that is gone, never more instances than
POOL_MAX_INSTANCES (sampled all along from the emulator), spend within SPEND_CAP_USD, every webhook
delivered or recorded as given up. Exit status 1 when one fails. `--seed` replays the same choices (the
interleaving with the processes is the OS's).

throughput: N jobs over 20 warm simulated instances (fake GPUs, zero step time) through 1, 2 and 3
replicas on PostgreSQL, and one process on SQLite (today's default): jobs/s and p50 per-job overhead
(submit -> succeeded minus GPU time). The replicas of a run share one process and event loop here (as
several processes would share this machine's two cores), one database, the fake provider and GPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from aiohttp import web

from app.config import Settings
from app.db import make_engine, make_sessionmaker

CLI = [sys.executable, "-m", "app.cli"]
STORE_PUT_TIMEOUT_S = 2.0  # the replicas' put timeout, so a slow store's put is cut within the soak
TERMINAL = {"succeeded", "failed", "cancelled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(seed: int) -> bytes:
    from tests.jobs.fakes import png_bytes

    return png_bytes(64, 64, (seed % 255, (seed // 255) % 255, 40))


# --- the webhook receiver ------------------------------------------------------------------------
class Receiver:
    def __init__(self) -> None:
        self.down_until = 0.0
        self.delivered: Counter[str] = Counter()
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if time.monotonic() < self.down_until:
            self.refused += 1
            return web.Response(status=503, text="down (chaos)")
        with contextlib.suppress(ValueError):
            data = json.loads(body)
            job_id = (data.get("data") or data).get("job_id") or data.get("job_id")
            if job_id:
                self.delivered[job_id] += 1
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- faults --------------------------------------------------------------------------------------
class Chaos:
    """Every fault switch of the simulated world, flipped at random."""

    def __init__(self, world: Any, receiver: Receiver, rng: random.Random, wf: Any) -> None:
        self.world, self.receiver, self.rng = world, receiver, rng
        self.nodes = list(wf.progress_nodes) or [wf.video_node]
        self.video_node = wf.video_node
        self.injected: Counter[str] = Counter()
        self.errors: list[str] = []  # injections that raised (printed, and fail the run)
        self._undo: list[tuple[float, Any]] = []

    def kinds(self) -> list[str]:
        return [
            "vast_429",
            "vast_5xx",
            "vast_offer_gone",
            "vast_ambiguous_create",
            "vast_null_show",
            "instance_stuck_loading",
            "instance_offline",
            "instance_exited",
            "instance_ssh_never",
            "instance_oci_error",
            "download_drop",
            "download_corrupt",
            "download_5xx",
            "comfy_crash",
            "comfy_silent_socket",
            "comfy_socket_drop",
            "comfy_history_lag",
            "comfy_execution_error",
            "store_transient",
            "store_permanent",
            "store_slow",
            "webhook_receiver_down",
        ]

    def _boxes(self) -> list[Any]:
        """Instances whose ComfyUI runs (an instance that boots like Vast's image has none until its
        supervisor starts it)."""
        return [b for b in self.world.backend.boxes.values() if b.comfy is not None]

    def inject(self) -> str | None:
        kind = self.rng.choice(self.kinds())
        vf = self.world.emulator.faults
        now = time.monotonic()
        if kind == "vast_429":
            vf.rate_limit_burst += 2
        elif kind == "vast_5xx":
            vf.server_errors += 1
        elif kind == "vast_offer_gone":
            vf.take_next_creates += 1
        elif kind == "vast_ambiguous_create":
            vf.create_timeout_mode = "drop"
            vf.create_timeouts += 1
        elif kind == "vast_null_show":
            vf.null_shows_after_create += 1
        elif kind.startswith("instance_"):
            vf.next_instance_faults.append(kind.removeprefix("instance_"))
        elif kind.startswith("download_"):
            served = self.rng.choice(list(self.world.mirror.files.values()))
            f = self.world.mirror.fault(served.spec.name)
            if kind == "download_drop":
                f.drop_at, f.drop_times = max(1, served.spec.size // 2), f.drop_times + 1
            elif kind == "download_corrupt":
                f.corrupt_times += 1
            else:
                f.status, f.status_times = 503, f.status_times + 1
        elif kind.startswith("comfy_"):
            boxes = self._boxes()
            if not boxes:
                return None
            cf = self.rng.choice(boxes).comfy.faults
            node = self.rng.choice(self.nodes)
            if kind == "comfy_crash":
                cf.crash_at_node, cf.crash_restart_after_s = node, 0.5
            elif kind == "comfy_silent_socket":
                cf.silent_ws_at_node = node
                self._undo.append((now + 3.0, lambda cf=cf: setattr(cf, "silent_ws", False)))
            elif kind == "comfy_socket_drop":
                cf.drop_ws_at_node = node
            elif kind == "comfy_history_lag":
                cf.history_lag_s = 1.5
                self._undo.append((now + 3.0, lambda cf=cf: setattr(cf, "history_lag_s", 0.0)))
            else:
                cf.error_at_node = node
                self._undo.append((now + 0.3, lambda cf=cf: setattr(cf, "error_at_node", None)))
        elif kind.startswith("store_"):
            sf = self.world.store_faults  # shared by every replica's puts (over HTTP)
            if kind == "store_transient":
                sf.transient_puts += 2  # retried in place (STORE_RETRY_S)
            elif kind == "store_permanent":
                sf.permanent_puts += 1  # a refusal: that job fails with store_auth_error
            else:
                sf.slow_puts, sf.slow_s = sf.slow_puts + 1, 3 * STORE_PUT_TIMEOUT_S  # cut, then retried
        elif kind == "webhook_receiver_down":
            self.receiver.down_until = now + 1.5
        self.injected[kind] += 1
        return kind

    def settle(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for at, undo in self._undo:
            if force or at <= now:
                undo()
            else:
                keep.append((at, undo))
        self._undo = keep

    def calm(self) -> None:
        """Every switch off (the drain at the end runs without new faults)."""
        self.settle(force=True)
        vf = self.world.emulator.faults
        vf.rate_limit_burst = vf.server_errors = vf.take_next_creates = vf.create_timeouts = 0
        vf.null_shows_after_create = 0
        vf.next_instance_faults.clear()
        self.world.mirror.faults.clear()
        self.world.store_faults.clear()
        for box in self._boxes():
            f = box.comfy.faults
            f.crash_at_node = f.silent_ws_at_node = f.drop_ws_at_node = f.error_at_node = None
            f.silent_ws, f.history_lag_s = False, 0.0
        self.receiver.down_until = 0.0


# --- replicas as processes -----------------------------------------------------------------------
class Replicas:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.generation: Counter[str] = Counter()

    def start(self, name: str) -> None:
        self.generation[name] += 1
        port = _free_port()
        env = {
            **self.env,
            "REPLICA_ID": f"{name}-{self.generation[name]}",
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
        }
        out = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.ports[name] = port

    async def ready(self, name: str, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                assert self.procs[name].poll() is None, f"replica {name} exited; see {self.logs}/{name}.log"
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{self.ports[name]}/readyz")).status_code == 200:
                        return
                assert time.monotonic() < deadline, f"replica {name} never became ready"
                await asyncio.sleep(0.1)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


async def soak(args: argparse.Namespace) -> int:
    from app.sim.world import publish, start_world
    from app.workflows import get_workflow
    from tests.support.postgres import PostgresServer

    rng = random.Random(args.seed)
    server = PostgresServer.start()
    tmp = Path(tempfile.mkdtemp(prefix="chaos-", dir=args.tmp))
    data = tmp / "data"
    db_url = server.url(server.create_database(prefix="chaos"))
    base_env = {
        "DATA_DIR": str(data),
        "DATABASE_URL": db_url,
        "PROVIDER": "sim",
        "SIM_TIME_SCALE": "0",
        "SIM_STEP_DELAY_S": str(args.step_delay),
        "ALLOW_LOOPBACK_URLS": "true",
        "POOL_MAX_INSTANCES": str(args.max_instances),
        "SPEND_CAP_USD": str(args.spend_cap),
        "IDLE_TTL_S": "20",
        "CLEANUP_INTERVAL_S": "3",
        "JOB_TIMEOUT_S": "240",
        "STORE_PUT_TIMEOUT_S": str(STORE_PUT_TIMEOUT_S),
        "STORE_RETRY_S": "20",
        "INSTANCE_READY_TIMEOUT_S": "15",
        "PROVISION_TIMEOUT_S": "40",
        "REPLICAS": "on",
        "REPLICA_LEASE_S": "4",
        "REPLICA_HEARTBEAT_S": "0.5",
        "REPLICA_POLL_S": "0.5",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(
        _env_file=None, data_dir=data, provider="sim", sim_time_scale=0.0, sim_step_delay_s=args.step_delay
    )
    world = await start_world(settings, attach=False)
    publish(world)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAST_", "API_TOKEN", "R2_"))}
    env.update(base_env)
    receiver = Receiver()
    await receiver.start()
    wf = get_workflow(settings.default_workflow, settings)
    chaos = Chaos(world, receiver, rng, wf)
    reps = Replicas(env, tmp)
    names = [f"r{i + 1}" for i in range(args.replicas)]
    max_seen = 0
    over: list[Any] = []  # what the emulator and the ledger held the first time the maximum was passed
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        nonlocal max_seen
        while not stop_sampling.is_set():
            live = list(world.emulator.instances.values())  # live (not destroyed) instances
            if len(live) > args.max_instances and not over:
                over.append([(i.id, i.label, i.phase, i.fault) for i in live])
                over.append(await ledger_states(db_url))
            max_seen = max(max_seen, len(live))
            await asyncio.sleep(0.1)

    submitted: list[str] = []
    lost_submits = 0
    kills = 0
    t0 = time.monotonic()
    try:
        for n in names:
            reps.start(n)
        for n in names:
            await reps.ready(n)
        sampler = asyncio.create_task(sample())
        kill_at = sorted(rng.sample(range(args.jobs // 10, args.jobs), args.kills))
        sem = asyncio.Semaphore(args.concurrency)

        async def submit(i: int, client: httpx.AsyncClient) -> None:
            nonlocal lost_submits
            body = {
                "image_base64": base64.b64encode(_png(i)).decode(),
                "prompt": f"chaos {i}",
                "num_frames": 9,
                "width": 256,
                "height": 256,
                "steps": 4,
                "seed": i,
                "webhook_url": receiver.url,
            }
            async with sem:
                for _ in range(20):
                    alive = reps.alive()
                    name = rng.choice(alive) if alive else names[0]
                    try:
                        r = await client.post(
                            f"http://127.0.0.1:{reps.ports[name]}/vastai/generate-video", json=body
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(0.2)
                        continue
                    if r.status_code == 202:
                        job_id = r.json()["job_id"]
                        submitted.append(job_id)
                        await wait_end(client, job_id)
                        return
                    await asyncio.sleep(0.2)
                lost_submits += 1

        async def wait_end(client: httpx.AsyncClient, job_id: str) -> None:
            while True:
                alive = reps.alive()
                if alive:
                    name = rng.choice(alive)
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        r = await client.get(f"http://127.0.0.1:{reps.ports[name]}/jobs/{job_id}")
                        if r.status_code == 200 and r.json()["state"] in TERMINAL:
                            return
                await asyncio.sleep(0.5)

        async def faults() -> None:
            while True:
                await asyncio.sleep(rng.uniform(0.2, 0.8) * args.fault_every)
                chaos.settle()
                try:
                    chaos.inject()
                except Exception as exc:  # a broken switch must show, not silently end the faults
                    chaos.errors.append(f"{type(exc).__name__}: {exc}")
                    print(f"  fault injection failed: {chaos.errors[-1]}", flush=True)

        async def killer() -> None:
            nonlocal kills
            for at in kill_at:
                while len(submitted) < at:  # noqa: ASYNC110 - a count, polled
                    await asyncio.sleep(0.1)
                alive = reps.alive()
                if not alive:
                    continue
                victim = rng.choice(alive)
                reps.kill(victim)
                kills += 1
                print(f"  killed {victim} after {len(submitted)} submissions", flush=True)
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                reps.start(victim)
                await reps.ready(victim)

        async with httpx.AsyncClient(timeout=30) as client:
            fault_task = asyncio.create_task(faults())
            kill_task = asyncio.create_task(killer())
            await asyncio.gather(*(submit(i, client) for i in range(args.jobs)))
            await kill_task
            fault_task.cancel()
            chaos.calm()
        ran_s = time.monotonic() - t0
        # Webhooks still retrying (the receiver was down) and the cleanup settle without new faults.
        report = await settle_and_check(db_url, world, receiver, args, within_s=args.drain_s)
        stop_sampling.set()
        await sampler
    finally:
        reps.stop_all()
        await receiver.stop()
        await world.stop()
        server.stop()
    report["max_instances_seen"] = max_seen
    ok_max = max_seen <= args.max_instances
    print(f"\nsoak: {args.jobs} jobs, {args.replicas} replicas, seed {args.seed}, {ran_s:.0f} s (+ drain)")
    print(
        f"  faults injected: {sum(chaos.injected.values())}, "
        f"{len(chaos.injected)} kinds of {len(chaos.kinds())} switches"
    )
    for kind, n in sorted(chaos.injected.items()):
        print(f"    {kind:<26} {n}")
    print(f"  replica kills (SIGKILL): {kills}")
    print(f"  jobs: {report['by_state']}  failed by kind: {report['failed_kinds']}")
    checks = [
        (
            "every job ended (none lost, none stuck)",
            report["unended"] == 0 and lost_submits == 0 and report["rows"] >= len(submitted),
        ),
        ("every failed job has a kind and a message", report["failed_without_reason"] == 0),
        ("no instance alive that the ledger does not know", not report["unknown_alive"]),
        ("no instance known alive that is gone", not report["known_gone"]),
        (f"never above POOL_MAX_INSTANCES={args.max_instances} (max seen {max_seen})", ok_max),
        (
            f"spend within SPEND_CAP_USD={args.spend_cap} (spent ${report['spent']:.4f})",
            report["spent"] <= args.spend_cap,
        ),
        ("every webhook delivered or given up", report["webhooks_pending"] == 0),
        (f"every fault injection worked ({len(chaos.errors)} failed)", not chaos.errors),
    ]
    print(f"  webhooks: {report['webhooks']}; receiver refused {receiver.refused} deliveries while down")
    for what, ok in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if report["unknown_alive"] or report["known_gone"]:
        print(f"    unknown alive: {report['unknown_alive']}  known gone: {report['known_gone']}")
    if over:
        print(f"  first time above the maximum: emulator {over[0]}")
        print(f"    ledger then: {over[1]}")
    print(f"  logs: {tmp}")
    return 0 if all(ok for _, ok in checks) else 1


async def ledger_states(db_url: str) -> list[tuple]:
    from app.pool.ledger import InstanceLedger

    engine = make_engine(db_url)
    try:
        rows = await InstanceLedger(make_sessionmaker(engine)).list(alive_only=False)
        return [(i.id, i.label, i.state.value, i.status_msg) for i in rows if i.alive or not i.destroyed_at]
    finally:
        await engine.dispose()


async def settle_and_check(
    db_url: str, world: Any, receiver: Receiver, args, within_s: float
) -> dict[str, Any]:
    from sqlalchemy import select

    from app.jobs.models import Job
    from app.pool.ledger import InstanceLedger

    engine = make_engine(db_url)
    sm = make_sessionmaker(engine)
    deadline = time.monotonic() + within_s
    try:
        while True:
            async with sm() as s:
                jobs = list((await s.execute(select(Job))).scalars())
            unended = [j for j in jobs if j.state not in TERMINAL]
            pending = [j for j in jobs if j.webhook_url and j.webhook_status not in ("delivered", "failed")]
            ledger = await InstanceLedger(sm).list(alive_only=False)
            live_world = {str(i) for i in world.emulator.instances}  # live in the emulator
            alive_rows = {i.id: i for i in ledger if i.alive and i.id}
            unknown = sorted(set(live_world) - {i.id for i in ledger if i.alive})
            gone = sorted(set(alive_rows) - set(live_world))
            if (not unended and not pending and not unknown and not gone) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        now = time.time()
        spent = sum(
            i.price_per_hour * max(0.0, (i.destroyed_at or now) - i.created_at) / 3600 for i in ledger
        )
        failed = [j for j in jobs if j.state == "failed"]
        return {
            "rows": len(jobs),
            "unended": len(unended),
            "by_state": dict(Counter(j.state for j in jobs)),
            "failed_kinds": dict(Counter(j.error_kind for j in failed)),
            "failed_without_reason": sum(1 for j in failed if not (j.error_kind and j.error_message)),
            "webhooks": dict(Counter(j.webhook_status for j in jobs if j.webhook_url)),
            "webhooks_pending": len(pending),
            "unknown_alive": unknown,
            "known_gone": gone,
            "spent": spent,
        }
    finally:
        await engine.dispose()


# --- throughput ----------------------------------------------------------------------------------
async def throughput_run(
    db_url: str, root: Path, *, replicas: int, jobs: int, instances: int
) -> tuple[float, float]:
    from app.jobs.claims import enable_replicas
    from app.jobs.services import assemble
    from app.pool.provider import InstanceState
    from tests.jobs.fakes import FakeComfy, FakeLedger, FakePreparer, FakeProvider, FakeStore, workflow_loader
    from tests.jobs.harness import create_tables

    provider, ledger, comfy, preparer = FakeProvider(price=0.4), FakeLedger(), FakeComfy(), FakePreparer()
    provider.ledger = ledger
    store = FakeStore(root / "store")
    for _ in range(instances):
        inst = provider.add(InstanceState.READY)
        inst.ready_at = time.time()
    group = []
    for r in range(replicas):
        settings = Settings(
            _env_file=None,
            data_dir=root / "data",
            cleanup_interval_s=0,
            pool_max_instances=instances,
            spend_cap_usd=10_000,
            job_timeout_s=600,
            replicas="on" if replicas > 1 or db_url.startswith("postgresql") else "off",
            replica_id=f"r{r + 1}",
        )
        engine = await create_tables(db_url)
        svc = assemble(
            settings,
            sessionmaker=make_sessionmaker(engine),
            provider=provider,
            preparer=preparer,
            comfy=comfy,
            store=store,
            workflows=workflow_loader(),
            ledger=ledger,
            engine=engine,
        )
        if settings.replicas_enabled:
            enable_replicas(svc, settings, engine)
        await svc.start()
        group.append(svc)
    images = [_png(i) for i in range(jobs)]
    overheads: list[float] = []

    async def one(i: int) -> None:
        svc = group[i % replicas]
        t = time.perf_counter()
        img = await svc.intake.from_bytes(images[i], "image_base64")
        job = await svc.submit(
            {"prompt": "bench", "seed": 70_000 + i, "num_frames": 5, "width": 256, "height": 256}, img
        )
        job = await svc.manager.wait(job.id, 600)
        assert job.state == "succeeded", (job.state, job.error_message)
        overheads.append(time.perf_counter() - t - float(job.result["timings"].get("gpu_s", 0.0)))

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(jobs)))
        dt = time.perf_counter() - t0
        burst = statistics.median(overheads)
        overheads.clear()
        for i in range(jobs, jobs + 40):  # then one job at a time, round robin over the replicas
            images.append(_png(i))
            await one(i)
        single = statistics.median(overheads)
    finally:
        for svc in group:
            await svc.stop()
    return jobs / dt, burst, single


def report(what: str, rate: float, burst: float, single: float) -> None:
    print(
        f"{what:<26} {rate:6.1f} jobs/s  p50 submit->succeeded in the burst {burst * 1000:7.1f} ms  "
        f"p50 overhead one job at a time {single * 1000:6.1f} ms"
    )


async def throughput(args: argparse.Namespace) -> int:
    from tests.support.postgres import PostgresServer

    print("load average before: {:.2f} {:.2f} {:.2f} ({} CPUs)".format(*os.getloadavg(), os.cpu_count()))
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        rate, burst, single = await throughput_run(
            f"sqlite+aiosqlite:///{root / 'sq' / 'jobs.db'}",
            root / "sq",
            replicas=1,
            jobs=args.jobs,
            instances=args.instances,
        )
        report("SQLite, 1 process", rate, burst, single)
        server = PostgresServer.start()
        try:
            for n in (1, 2, 3):
                url = server.url(server.create_database(prefix=f"tp{n}"))
                rate, burst, single = await throughput_run(
                    url, root / f"pg{n}", replicas=n, jobs=args.jobs, instances=args.instances
                )
                report(f"PostgreSQL, {n} replica(s)", rate, burst, single)
        finally:
            server.stop()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--jobs", type=int, default=500)
    s.add_argument("--replicas", type=int, default=2)
    s.add_argument("--kills", type=int, default=5)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--max-instances", type=int, default=4)
    s.add_argument("--spend-cap", type=float, default=5.0)
    s.add_argument("--concurrency", type=int, default=24, help="jobs in flight at once")
    s.add_argument("--fault-every", type=float, default=1.0, help="mean seconds between faults")
    s.add_argument("--step-delay", type=float, default=0.02)
    s.add_argument("--drain-s", type=float, default=240.0)
    s.add_argument("--tmp", default=None)
    t = sub.add_parser("throughput")
    t.add_argument("--jobs", type=int, default=1000)
    t.add_argument("--instances", type=int, default=20)
    t.add_argument("--tmp", default=None)
    args = ap.parse_args()
    code = asyncio.run(soak(args) if args.cmd == "soak" else throughput(args))
    sys.exit(code)


if __name__ == "__main__":
    main()
