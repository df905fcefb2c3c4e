"""The one place where the real rooms are plugged into the jobs room: `build_services(settings)`.

Everything else in `app.jobs` talks to the small ports of `app.jobs.ports` and `app.pool.ports`; the
adapters here turn the real `ComfyClient`, the provisioning functions, the store and the providers into
those ports. Which
provider: `vast` (Vast.ai, or its emulator when VAST_API_URL points at one), `static` (configured
endpoints), `sim` (the simulated world, started here and stopped with the services).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import shlex
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from app.comfy import ComfyClient, ExecutionError, PromptResult, find_outputs
from app.comfy.errors import ComfyUnavailable
from app.comfy.progress import Progress as ComfyProgress
from app.config import Settings
from app.db import init_db, make_engine, make_sessionmaker
from app.errors import ConfigError
from app.jobs.services import Services, assemble
from app.pool.hosts import HostBook, HostSample
from app.pool.ledger import InstanceLedger
from app.pool.ports import ComfyTarget, Progress, ProgressFn
from app.pool.provider import Instance, Provider
from app.pool.static import StaticProvider
from app.provision import build_plan, connect, open_tunnel, run_provision
from app.provision.errors import ComfyNeverStarted, ComfyRestartFailed
from app.provision.mirror import apply_r2_mirror
from app.provision.progress import ProvisionTracker
from app.provision.verify import remove_models, verify_models
from app.provision.warmup import warm_up
from app.redact import redact, register_secret
from app.store.factory import make_store
from app.store.local import LocalStore
from app.store.routes import local_files_router
from app.workflows import get_workflow

log = logging.getLogger(__name__)


# --- ComfyUI -------------------------------------------------------------------------------------
class ComfyClientSession:
    """`app.jobs.ports.ComfySession` on top of `app.comfy.ComfyClient`."""

    def __init__(self, client: ComfyClient, *, poll_s: float = 1.0) -> None:
        self.client = client
        self.poll_s = poll_s

    async def upload_image(self, path: Path) -> str:
        return await self.client.upload_image(path)

    async def run(
        self, graph, *, deadline, on_progress, on_submitted, progress_nodes, keep_on_cancel=None
    ) -> PromptResult:
        return await self.client.run(
            graph,
            deadline=deadline,
            on_progress=lambda p: on_progress(_comfy_progress(p)),
            progress_nodes=progress_nodes,
            on_submitted=on_submitted,
            keep_running_on_cancel=keep_on_cancel,
        )

    async def attach(
        self, prompt_id: str, *, deadline: float, on_progress: ProgressFn
    ) -> PromptResult | None:
        """Follow a prompt submitted by an earlier process through /queue and /history (no socket: its
        events went to the old client id). None when ComfyUI has no trace of it or it was interrupted."""
        on_progress(Progress("re-attached: waiting for ComfyUI"))
        while True:
            entry = await self.client.history(prompt_id)
            if entry is not None:
                return _result_from_history(prompt_id, entry)
            queue = await self.client.queue()
            if not _in_queue(queue, prompt_id):
                entry = await self.client.history(prompt_id)  # it may have finished in between
                return _result_from_history(prompt_id, entry) if entry is not None else None
            if time.monotonic() + self.poll_s > deadline:
                raise TimeoutError(f"prompt {prompt_id} did not finish before the job deadline")
            await asyncio.sleep(self.poll_s)

    async def cancel(self, prompt_id: str) -> None:
        await self.client.cancel(prompt_id)

    async def download_outputs(self, result: PromptResult, dest_dir: Path) -> list[Path]:
        return await self.client.download_outputs(result, dest_dir)

    async def extract_last_frame(self, video_path: Path, png_path: Path) -> None:
        await self.client.extract_last_frame(video_path, png_path)


def _comfy_progress(p: ComfyProgress) -> Progress:
    detail: dict[str, Any] = {}
    if p.value is not None and p.max:
        detail = {"step": p.value, "steps": p.max, "node": p.node_id}
    return Progress(p.stage, p.fraction, detail)


def _in_queue(queue: Any, prompt_id: str) -> bool:
    for key in ("queue_running", "queue_pending"):
        for item in (queue or {}).get(key) or []:
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return True
    return False


def _result_from_history(prompt_id: str, entry: dict[str, Any]) -> PromptResult | None:
    status = entry.get("status") or {}
    if status.get("status_str") == "error":
        for event, data in status.get("messages") or []:
            if event == "execution_error":
                raise ExecutionError.from_event(data)
        return None  # interrupted: run it again
    outputs = entry.get("outputs") or {}
    return PromptResult(
        prompt_id=prompt_id, outputs=find_outputs(outputs), raw_outputs=dict(outputs), status=dict(status)
    )


class ComfyConnector:
    """`ComfyConnector` port: one long-lived `ComfyClient` (pooled HTTP connections) per ComfyUI URL,
    instead of a new client, connection pool and TLS context for every job."""

    def __init__(self, timeout_s: float = 30.0, max_clients: int = 64) -> None:
        self.timeout_s = timeout_s
        self.max_clients = max_clients
        self._clients: dict[tuple, ComfyClient] = {}

    @contextlib.asynccontextmanager
    async def __call__(self, target: ComfyTarget) -> AsyncIterator[ComfyClientSession]:
        key = (target.url, target.token, target.basic_auth)
        client = self._clients.pop(key, None)  # re-inserted below: most recently used last
        if client is None:
            client = ComfyClient(
                target.url, token=target.token, basic_auth=target.basic_auth, timeout=self.timeout_s
            )
            await client.__aenter__()
        self._clients[key] = client
        while len(self._clients) > self.max_clients:
            old_key = next(iter(self._clients))
            await self._clients.pop(old_key).aclose()
        yield ComfyClientSession(client)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()


def comfy_connector(timeout_s: float = 30.0) -> ComfyConnector:
    return ComfyConnector(timeout_s)


# --- provisioning --------------------------------------------------------------------------------
class SSHPreparer:
    """`InstancePreparer`: SSH (host key pinned on first contact), provisioning for the workflow, an SSH
    tunnel to ComfyUI when the instance keeps it on loopback, then ComfyUI readiness and capabilities."""

    def __init__(self, settings: Settings, ledger: InstanceLedger | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self._conns: dict[str, Any] = {}
        self._tunnels: dict[str, tuple[str, Callable]] = {}
        # instance id -> workflow -> per-file progress of its last provisioning (GET /instances/{id})
        self.provisioning: dict[str, dict[str, ProvisionTracker]] = {}

    async def prepare(self, instance: Instance, workflow: Any, on_progress: ProgressFn) -> ComfyTarget:
        s = self.settings
        deadline = time.monotonic() + s.provision_timeout_s
        conn = await self._connection(instance)
        image = instance.provider == "vast"  # booted from Vast's ComfyUI image (or the simulated one)
        restart_failed: ComfyRestartFailed | None = None
        if conn is not None:
            plan = await build_plan(workflow, s, comfy_dir=instance.comfy_dir)
            if image:
                plan = image_plan(plan, s)
            try:
                await self._provision(instance, conn, plan, _ProvisionProgress(workflow, on_progress))
            except ComfyRestartFailed as exc:
                if not image:
                    raise
                restart_failed = exc  # a ComfyUI that never starts also fails its restart: tell them apart
        target = await self._target(instance, conn)
        async with ComfyClient(target.url, token=target.token, basic_auth=target.basic_auth) as client:
            on_progress(Progress("waiting for ComfyUI", 1.0))
            if image:
                await self._wait_comfy_started(instance, conn, client, deadline)
                if restart_failed is not None:
                    raise restart_failed
            else:
                await client.wait_ready(deadline)
            await client.check_capabilities(
                workflow.node_types, workflow.models, custom_nodes=getattr(workflow, "custom_nodes", ())
            )
            if s.comfy_warmup and hasattr(workflow, "render"):
                on_progress(Progress("warming up", 1.0))
                try:
                    seconds = await warm_up(client, workflow, deadline=deadline)
                except Exception as exc:  # a failed warm-up costs the first job the model load, no more
                    log.warning("warm-up on %s failed: %s", instance.id, redact(str(exc)))
                    instance.meta["warmup_error"] = redact(str(exc))[:300]
                    return target
                warm = dict(instance.meta.get("warmup") or {})
                warm[workflow.name] = round(seconds, 3)
                instance.meta["warmup"] = warm  # the instance's time, not the job's (Lease.ensure_ready)
                instance.meta["warmup_s"] = round(sum(warm.values()), 3)
                instance.meta["last_warmup_s"] = seconds
        return target

    async def _wait_comfy_started(
        self, instance: Instance, conn: Any | None, client: ComfyClient, deadline: float
    ) -> None:
        """ComfyUI must answer within COMFY_START_TIMEOUT_S, not the hour-long provisioning deadline: one
        that never starts (e.g. skipped by the image's portal check) marks the host bad, so the job goes
        to another machine instead of paying for this one until the provisioning deadline."""
        limit = self.settings.comfy_start_timeout_s
        try:
            await client.wait_ready(min(deadline, time.monotonic() + limit))
        except ComfyUnavailable as exc:
            tail = await _log_tail(conn, self.settings.comfy_log_path)
            reason = f"ComfyUI did not answer within {limit:.0f} s of provisioning ({exc})"
            if tail:
                reason += f"; its log ends: {tail}"
            instance.meta["failure"] = reason[:1024]
            instance.meta["machine_fault"] = True
            if self.ledger is not None:
                with contextlib.suppress(Exception):
                    await self.ledger.update(instance)
            raise ComfyNeverStarted(redact(reason)) from exc

    async def _provision(self, instance: Instance, conn: Any, plan: Any, on_event: Callable) -> None:
        """Run provision.sh with its events going to `on_event` and to the instance's per-file tracker.
        Models the R2 mirror holds are fetched from it first, their usual source as fallback."""
        s = self.settings
        plan = await apply_r2_mirror(plan, s)
        files = ProvisionTracker.for_plan(plan)
        self.provisioning.setdefault(instance.id, {})[plan.workflow] = files

        def both(event: dict[str, Any]) -> None:
            files.feed(event)
            on_event(event)

        try:
            summary = await run_provision(
                conn,
                plan,
                both,
                hf_token=s.hf_token.get_secret_value() if s.hf_token else None,
                timeout_s=s.provision_timeout_s,
            )
        except BaseException as exc:
            files.finish(redact(str(exc)) or type(exc).__name__)
            raise
        files.finish()
        download_s = float((summary.summary or {}).get("ms") or 0) / 1000.0 or summary.seconds
        if summary.bytes_downloaded >= 1 << 20 and download_s > 0:  # what this host's link really did
            instance.meta["download_mbps"] = round(summary.bytes_downloaded * 8 / download_s / 1e6, 1)

    def provisioning_of(self, instance_id: str) -> list[dict[str, Any]]:
        """Per-file progress of every provisioning run on the instance (the latest per workflow)."""
        return [t.snapshot() for t in self.provisioning.get(instance_id, {}).values()]

    async def verify(
        self, instance: Instance, workflows: list[Any], *, refetch: bool = False
    ) -> list[dict[str, Any]]:
        """sha256 of every model file of `workflows` on the instance, against the pinned hashes; with
        `refetch`, files that differ are deleted (with their sidecars) and provisioning fetches them again.
        Returns one report per workflow."""
        conn = await self._connection(instance)
        if conn is None:
            raise ConfigError(f"instance {instance.id} has no SSH access, so its files cannot be checked")
        reports = []
        for workflow in workflows:
            plan = await build_plan(workflow, self.settings, comfy_dir=instance.comfy_dir)
            checks = await verify_models(conn, plan)
            bad = [c for c in checks if c.status in ("mismatch", "missing")]
            if refetch and bad:
                await remove_models(conn, plan, [c.name for c in bad])
                await self._provision(instance, conn, plan, lambda _e: None)
                after = {c.name: c for c in await verify_models(conn, plan)}
                for c in bad:
                    fixed = after[c.name]
                    c.actual_sha256, c.size, c.status, c.refetched = (
                        fixed.actual_sha256,
                        fixed.size,
                        fixed.status,
                        True,
                    )
            reports.append(
                {
                    "workflow": workflow.name,
                    "ok": all(c.status in ("ok", "unknown") for c in checks),
                    "files": [c.to_dict() for c in checks],
                }
            )
        return reports

    async def _connection(self, instance: Instance) -> Any | None:
        if instance.ssh is None:
            return None
        conn = self._conns.get(instance.id)
        if conn is not None and not conn.is_closed():
            return conn

        async def pin(host_key: str) -> None:
            instance.ssh.host_key = host_key
            if self.ledger is not None:
                await self.ledger.update(instance)

        conn = await connect(instance.ssh, self.settings.effective_ssh_key_path, on_new_host_key=pin)
        self._conns[instance.id] = conn
        self._tunnels.pop(instance.id, None)
        return conn

    async def _target(self, instance: Instance, conn: Any | None) -> ComfyTarget:
        ep = instance.comfy
        if ep is None:
            raise ValueError(f"instance {instance.id} has no ComfyUI endpoint")
        if ep.token:
            register_secret(ep.token)
        auth = (ep.basic_user, ep.basic_password) if ep.basic_user and ep.basic_password else None
        if ep.via_tunnel and conn is not None:
            if instance.id not in self._tunnels:
                port, close = await open_tunnel(conn, ep.remote_host, ep.remote_port)
                self._tunnels[instance.id] = (f"http://127.0.0.1:{port}", close)
            return ComfyTarget(self._tunnels[instance.id][0], token=ep.token, basic_auth=auth)
        if not ep.url:
            raise ValueError(f"instance {instance.id} has no ComfyUI URL and no SSH tunnel")
        return ComfyTarget(ep.url, token=ep.token, basic_auth=auth)

    async def release(self, instance: Instance) -> None:
        self.provisioning.pop(instance.id, None)
        tunnel = self._tunnels.pop(instance.id, None)
        if tunnel is not None:
            with contextlib.suppress(Exception):
                await tunnel[1]()
        conn = self._conns.pop(instance.id, None)
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)


class HostRecorder:
    """After every finished job: one `host_samples` row (machine, GPU, s/step, s/frame, download Mb/s;
    not the first job of an instance that was not warmed up: it paid the model load);
    an idle instance on a host now measured slow (HOST_SLOW_FACTOR x its GPU model's median) is retired,
    so the next job rents elsewhere (ranking excludes slow machines)."""

    def __init__(self, hosts: HostBook, pool: Any) -> None:
        self.hosts = hosts
        self.pool = pool
        self._seen: set[str] = set()  # instances whose first (cold) job was skipped

    async def __call__(
        self, instance: Instance, job_id: str, workflow: str, params: Any, gpu_s: float
    ) -> None:
        if not instance.machine_id or gpu_s <= 0:
            return  # static endpoints: nothing to rent differently
        if not instance.meta.get("warmup") and instance.id not in self._seen:
            self._seen.add(instance.id)
            return  # its first job after a start loaded the models: not the host's sampling speed
        width, height = getattr(params, "width", None), getattr(params, "height", None)
        sample = HostSample(
            machine_id=str(instance.machine_id),
            gpu_name=instance.gpu_name,
            gpu_s=gpu_s,
            steps=getattr(params, "steps", None) or None,
            frames=getattr(params, "num_frames", None) or None,
            megapixels=(width * height / 1e6) if width and height else None,
            download_mbps=instance.meta.get("download_mbps"),
            provider=instance.provider,
            instance_id=instance.id,
            job_id=job_id,
            workflow=workflow,
        )
        await self.hosts.record(sample)
        if sample.machine_id in self.hosts.knowledge.slow_machines():
            instance.meta["slow_host"] = True
            member = self.pool.members.get(instance.id)
            if member is not None and not member.jobs:
                await self.pool.retire(instance.id, reason=f"slow host: machine {sample.machine_id}")


def image_plan(plan: Any, settings: Settings) -> Any:
    """What an instance booted from Vast's ComfyUI image needs on top of the workflow's plan: wait for the
    image's own boot before touching the ComfyUI folder, and install custom-node requirements with
    ComfyUI's own Python (the script keeps its torch family)."""
    return dataclasses.replace(
        plan,
        python=settings.comfy_python or plan.python,
        boot_wait_s=max(1, int(settings.comfy_boot_timeout_s)),
        boot_marker=settings.comfy_boot_marker or None,
        restart_timeout_s=max(1, min(plan.restart_timeout_s, int(settings.comfy_start_timeout_s))),
    )


async def _log_tail(conn: Any | None, path: str, lines: int = 3) -> str:
    """The last lines of ComfyUI's log on the instance (why it did not start), or ""."""
    if conn is None or not path:
        return ""
    remote = f"~/{path[2:]}" if path.startswith("~/") else path
    if remote.startswith("~/"):
        quoted = '"$HOME"/' + shlex.quote(remote[2:])
    else:
        quoted = shlex.quote(remote)
    try:
        result = await asyncio.wait_for(conn.run(f"tail -n {lines} {quoted}", check=False), 10)
    except Exception:
        return ""
    text = (
        result.stdout if isinstance(result.stdout, str) else (result.stdout or b"").decode(errors="replace")
    )
    return redact(" | ".join(line.strip() for line in text.splitlines() if line.strip()))[:600]


class _ProvisionProgress:
    """provision.sh's JSON events -> one byte-weighted fraction for the job and the CLI's byte bar."""

    def __init__(self, workflow: Any, on_progress: ProgressFn) -> None:
        self.on_progress = on_progress
        self.totals: dict[str, int] = {m.name: int(m.size or 0) for m in getattr(workflow, "models", [])}
        self.done: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind, name = event.get("event"), event.get("file")
        if name:
            if event.get("total"):
                self.totals[name] = int(event["total"])
            if kind in ("progress", "done"):
                self.done[name] = int(event.get("bytes") or 0)
            elif kind == "skipped":
                self.done[name] = self.totals.get(name, 0)
        total = sum(self.totals.values())
        done = min(total, sum(self.done.values()))
        fraction = done / total if total else None
        self.on_progress(
            Progress(
                "provisioning",
                fraction,
                {"bytes_done": done, "bytes_total": total, "file": name, "event": kind},
            )
        )


# --- the whole service ---------------------------------------------------------------------------
async def build_services(settings: Settings) -> Services:
    """Real database, ledger, provider, store, workflows, ComfyUI client and provisioning."""
    closers: list[Callable[[], Any]] = []
    world = None
    if settings.effective_provider == "sim":
        # The simulated world (lead-owned) starts the Vast emulator, simulated instances and the model
        # server, and returns the settings that point the real product code at them.
        from app.sim.world import start_world

        world = await start_world(settings)
        settings = world.settings
        closers.append(world.stop)
    engine = make_engine(settings.effective_database_url)
    await init_db(engine)
    sessionmaker = make_sessionmaker(engine)
    ledger = InstanceLedger(sessionmaker)
    provider: Provider
    if settings.effective_provider == "static":
        provider = StaticProvider(settings)
    else:
        from app.vast.factory import client_from_settings
        from app.vast.provider import VastProvider

        client = client_from_settings(settings)
        closers.append(client.aclose)
        provider = VastProvider(client, ledger, settings)
        if world is not None and not world.attached:  # runs before client.aclose and world.stop
            closers.append(functools.partial(destroy_world_instances, provider))
    store = make_store(settings)
    if hasattr(store, "close"):
        closers.append(store.close)

    @functools.lru_cache(maxsize=64)
    def workflows(name: str) -> Any:
        return get_workflow(name, settings)

    comfy = comfy_connector()
    closers.append(comfy.aclose)
    services = assemble(
        settings,
        sessionmaker=sessionmaker,
        provider=provider,
        preparer=SSHPreparer(settings, ledger),
        comfy=comfy,
        store=store,
        workflows=workflows,
        ledger=ledger,
        engine=engine,
    )
    if isinstance(store, LocalStore):
        services.routers.append(local_files_router(store))
    if world is not None:  # the simulated world's store fault switches, in front of the results' puts
        services.runner.results.store, close_faults = world.wrap_store(services.runner.results.store)
        if close_faults is not None:
            closers.append(close_faults)
    hosts = HostBook(sessionmaker, slow_factor=settings.host_slow_factor)
    services.hosts = hosts  # type: ignore[attr-defined]
    if hasattr(provider, "hosts"):  # Vast (and the simulated world): learnt ranking
        provider.hosts = hosts
    services.runner.host_recorder = HostRecorder(hosts, services.pool)
    services.closers.extend(closers)
    if settings.replicas_enabled:
        from app.jobs.claims import enable_replicas

        enable_replicas(services, settings, engine)
    log.info(
        "services built: provider=%s store=%s simulated=%s",
        provider.name,
        settings.effective_store_backend,
        settings.simulated,
    )
    return services


async def destroy_world_instances(provider: Provider) -> None:
    """A simulated world this process started ends with it, and so do the instances it holds: destroy
    them through the provider, so the ledger records it (no `ready` row outlives its world)."""
    try:
        instances = await provider.list()  # what this world's emulator holds: never another world's
    except Exception as exc:
        log.warning("simulated world: could not list its instances to destroy them: %s", exc)
        return
    for inst in instances:
        try:
            await provider.destroy(inst)
        except Exception as exc:
            log.warning("simulated world: could not destroy instance %s: %s", inst.id, exc)


def describe(settings: Settings) -> str:
    """One line for banners and logs (no secrets)."""
    world = "SIMULATED WORLD" if settings.simulated else "real world"
    return redact(
        f"{world}: provider={settings.effective_provider} store={settings.effective_store_backend} "
        f"db={settings.effective_database_url.split('://', 1)[0]}"
    )


async def build_cleaner(settings: Settings) -> tuple[Any, Callable[[], Any]]:
    """What `comfyfleet cleanup` needs, without starting a server or the simulated world: the job
    database, the ledger and the provider. Returns (cleaner, close)."""
    from app.cleanup import Cleaner
    from app.jobs.repo import JobRepo

    engine = make_engine(settings.effective_database_url)
    await init_db(engine)
    sessionmaker = make_sessionmaker(engine)
    ledger = InstanceLedger(sessionmaker)
    closers: list[Callable[[], Any]] = [engine.dispose]
    provider: Provider | None = None
    world = None
    if settings.effective_provider == "sim":
        # A world started by `comfyfleet sim` outlives the servers using it: its instances are reaped like
        # Vast's. Without one, no simulated instance outlives the process that started it.
        from app.sim.world import attach_world

        world = await attach_world(settings)
        if world is not None:
            settings = world.settings
    if settings.effective_provider == "static":
        provider = StaticProvider(settings)
    elif settings.effective_provider == "vast" or world is not None:
        from app.vast.factory import client_from_settings
        from app.vast.provider import VastProvider

        client = client_from_settings(settings)
        closers.insert(0, client.aclose)
        provider = VastProvider(client, ledger, settings)
    data = settings.data_dir
    cleaner = Cleaner(
        JobRepo(sessionmaker),
        provider,
        ledger,
        idle_ttl_s=settings.idle_ttl_s,
        instance_deadline_s=settings.instance_ready_timeout_s + settings.provision_timeout_s,
        job_timeout_s=settings.job_timeout_s,
        tmp_dirs=(data / "tmp", data / "inputs" / ".staging"),
        inputs_dir=data / "inputs",
    )

    async def close() -> None:
        for c in closers:
            with contextlib.suppress(Exception):
                await c()

    return cleaner, close
