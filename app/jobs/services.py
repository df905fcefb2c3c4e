"""The running control plane as one object: what the HTTP app, the CLI and the tests hold.

`assemble` composes the jobs room's parts from collaborators (provider, preparer, ComfyUI connector,
store, workflow loader). `app.jobs.wiring.build_services` passes the real ones; tests pass fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.cleanup import Cleaner
from app.config import Settings
from app.intake import ImageIntake, InputImage
from app.jobs.batches import BatchManager
from app.jobs.events import EventHub
from app.jobs.fleet import Fleet
from app.jobs.groups import GroupRepo
from app.jobs.manager import JobManager
from app.jobs.metrics import Metrics
from app.jobs.models import Job
from app.jobs.ports import ComfyConnector
from app.jobs.repo import JobRepo
from app.jobs.runner import JobRunner, RunnerConfig
from app.jobs.stories import StoryManager
from app.jobs.webhooks import WebhookSender
from app.pool.ports import InstancePreparer, Ledger
from app.pool.provider import CreateRequest, Provider
from app.pool.scheduler import Pool
from app.redact import register_secret
from app.store.cache import ResultCache, cache_key, last_frame_key, seedless_key, video_key
from app.workflows.enhance import enhance
from app.workflows.inputs import inputs_digest
from app.workflows.plan import Plan, enhancement_inputs, plan_request, resolve_workflow

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    sessionmaker: async_sessionmaker
    repo: JobRepo
    events: EventHub
    provider: Provider
    ledger: Ledger | None
    pool: Pool
    store: Any
    workflows: Callable[[str], Any]
    runner: JobRunner
    manager: JobManager
    webhooks: WebhookSender
    cleaner: Cleaner
    intake: ImageIntake
    metrics: Metrics
    engine: AsyncEngine | None = None
    groups: GroupRepo | None = None
    stories: StoryManager | None = None
    batches: BatchManager | None = None
    fleet: Fleet | None = None
    routers: list[Any] = field(default_factory=list)  # extra FastAPI routers (the local store's /files)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # e.g. the simulated world
    enhancer_transport: Any = None  # tests: an httpx transport standing in for PROMPT_ENHANCER_URL
    run_cleanup_loop: bool = True
    # Only the long-running server adopts jobs a previous process left behind; a one-shot
    # `comfyfleet generate` sharing the database must not run the server's jobs a second time.
    recover_on_start: bool = True
    started: bool = False
    replica: Any = None  # app.jobs.claims.Replica when several replicas share the database
    _cleanup_task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.started:
            return
        # Store uploads, file copies and frame extraction run in threads; the default pool (cpu+4
        # threads) would queue dozens of concurrent jobs behind each other.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(16, thread_name_prefix="io"))
        await self.pool.start()
        if self.replica is not None:
            # heartbeat; the pool learns the fleet before jobs are resumed
            await self.replica.start(
                adopt=self.recover_on_start,
                cleanup=self.run_cleanup_loop and self.settings.cleanup_interval_s > 0,
            )
        await self.webhooks.start()
        if self.recover_on_start:
            await self.webhooks.resume_never_enqueued()
            await self.manager.start()
            if self.batches is not None:
                await self.batches.start()
            if self.stories is not None:
                await self.stories.start()
        if self.run_cleanup_loop and self.settings.cleanup_interval_s > 0:
            self._cleanup_task = asyncio.get_running_loop().create_task(
                self.cleaner.run_forever(self.settings.cleanup_interval_s), name="cleanup"
            )
        self.started = True

    async def stop(self) -> None:
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(BaseException):
                await self._cleanup_task
        if self.stories is not None:
            await self.stories.stop()
        if self.replica is not None:
            await self.replica.stop()
        await self.manager.stop()
        if self.replica is not None:
            await self.replica.after_jobs_stopped()  # other replicas take its jobs now
        await self.webhooks.stop()
        await self.pool.stop()
        for close in reversed(self.closers):
            try:
                await close()
            except Exception as exc:
                log.warning("shutdown step failed: %s", exc)
        if self.engine is not None:
            await self.engine.dispose()
        self.started = False

    async def fresh_urls(self, job: Job) -> dict[str, Any] | None:
        """The job's result with URLs made now: presigned URLs expire, so a job read later gets new ones."""
        result = dict(job.result or {})
        key = result.get("store_key") or job.cache_key
        if not result or not key:
            return job.result
        try:
            ext = Path(str(result.get("video_url", "")).split("?", 1)[0]).suffix.lstrip(".") or "mp4"
            result["video_url"] = await self.store.url(video_key(key, ext))
            if result.get("last_frame_url"):
                result["last_frame_url"] = await self.store.url(last_frame_key(key))
        except Exception as exc:  # the stored URLs are still the best answer we have
            log.warning("could not refresh result URLs of %s: %s", job.id, exc)
            return job.result
        return result

    async def fresh_urls_for_key(self, store_key: str, result: dict[str, Any]) -> dict[str, Any]:
        """Fresh `video_url` / `last_frame_url` for a result stored under `store_key` (a story's join)."""
        try:
            ext = Path(str(result.get("video_url", "")).split("?", 1)[0]).suffix.lstrip(".") or "mp4"
            out = {"video_url": await self.store.url(video_key(store_key, ext))}
            if result.get("last_frame_url"):
                out["last_frame_url"] = await self.store.url(last_frame_key(store_key))
            return out
        except Exception as exc:  # the stored URLs are still the best answer we have
            log.warning("could not refresh result URLs of %s: %s", store_key, exc)
            return {}

    async def submit(
        self,
        raw: dict[str, Any],
        image: InputImage | None,
        *,
        workflow: str | None = None,
        webhook_url: str | None = None,
        local_copy: Path | None = None,
        reuse_cached: bool = False,
        submitted_by: str | None = None,
        files: Mapping[str, Any] | None = None,
        given: Mapping[str, str] | None = None,
    ) -> Job:
        """Validate parameters against the workflow and create the job. Raises ValidationError (no job).
        `submitted_by` is the name of the API token that asked (recorded on the job; never the token).
        `files` holds the other file inputs (`end_image`: InputImage, `audio`: InputAudio); `given` maps
        each input to the request field that carried it (for error messages)."""
        prepared = await self.prepare(
            raw,
            image,
            workflow=workflow,
            webhook_url=webhook_url,
            reuse_cached=reuse_cached,
            files=files,
            given=given,
        )
        return await self.create(prepared, local_copy=local_copy, submitted_by=submitted_by)

    def plan(
        self,
        raw: Mapping[str, Any],
        *,
        workflow: str | None = None,
        given: Mapping[str, str] | None = None,
        image_size: tuple[int, int] | None = None,
        audio_seconds: float | None = None,
        prefix: str = "",
        enhanced_prompt: str | None = None,
        enhanced_by: str | None = None,
    ) -> Plan:
        """The request resolved by `app.workflows.plan.plan_request` (one planner for the API, the CLI,
        stories and batches)."""
        return plan_request(
            self.workflows,
            workflow or self.settings.default_workflow,
            raw,
            given=given,
            image_size=image_size,
            audio_seconds=audio_seconds,
            max_audio_seconds=self.settings.max_audio_seconds,
            prefix=prefix,
            enhanced_prompt=enhanced_prompt,
            enhanced_by=enhanced_by,
        )

    async def plan_enhanced(self, raw: Mapping[str, Any], **kw: Any) -> Plan:
        """`plan`, then, with `enhance_prompt`, the prompt rewritten (local rules, or PROMPT_ENHANCER_URL)
        with the plan's camera phrase and preset aesthetic terms, and planned again with it."""
        plan = self.plan(raw, **kw)
        if not raw.get("enhance_prompt"):
            return plan
        phrase, aesthetic = enhancement_inputs(plan)
        s = self.settings
        prompt_spec = plan.workflow.limits.get("prompt")
        original = str(raw.get("prompt", plan.params.prompt))
        result = await enhance(
            original,
            camera_phrase=phrase,
            aesthetic=aesthetic,
            max_length=(prompt_spec.max_length if prompt_spec and prompt_spec.max_length else 2000),
            url=s.prompt_enhancer_url,
            key=s.prompt_enhancer_key.get_secret_value() if s.prompt_enhancer_key else None,
            model=s.prompt_enhancer_model,
            timeout_s=s.prompt_enhancer_timeout_s,
            transport=self.enhancer_transport,
        )
        return self.plan(raw, enhanced_prompt=result.prompt, enhanced_by=result.by, **kw)

    def check_params(
        self,
        raw: dict[str, Any],
        image_size: tuple[int, int] | None,
        *,
        workflow: str | None = None,
        given: Mapping[str, str] | None = None,
    ) -> tuple[Any, Any]:
        """(workflow, validated params) for a request, without touching any image: what a batch or a
        story checks up front for every request before anything is fetched or created. `given`: the
        file inputs the request has (None: assume the workflow's required ones, checked later)."""
        wf = resolve_workflow(self.workflows, workflow or self.settings.default_workflow, raw)
        if given is None:
            given = {"image": "image_url"} if image_size is not None and wf.inputs.image.taken else {}
            for spec in wf.inputs.all:  # files are checked when fetched; here only the parameters
                if spec.required and spec.name not in given:
                    given[spec.name] = spec.name
        plan = self.plan(raw, workflow=workflow, given=given, image_size=image_size, audio_seconds=None)
        return plan.workflow, plan.params

    async def prepare(
        self,
        raw: dict[str, Any],
        image: InputImage | None,
        *,
        workflow: str | None = None,
        webhook_url: str | None = None,
        reuse_cached: bool = False,
        drop_first_frames: int = 0,
        tags: dict[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
        given: Mapping[str, str] | None = None,
        prefix: str = "",
    ) -> PreparedJob:
        """Everything `submit` checks, without creating the job: the validated request, its cache key and
        the staged files. The files are discarded when the request is refused.

        `drop_first_frames` renders the workflow with its first frames cut before the encoder (a story's
        later segments); it is part of the cache key. `tags` (story or batch membership) go into the
        job's request record as they are."""
        staged: dict[str, Any] = {k: v for k, v in (files or {}).items() if v is not None}
        if image is not None:
            staged["image"] = image
        given = dict(given or {name: name for name in staged})
        audio = staged.get("audio")
        try:
            plan = await self.plan_enhanced(
                raw,
                workflow=workflow,
                given=given,
                image_size=(image.width, image.height) if image is not None else None,
                audio_seconds=getattr(audio, "duration_s", None),
                prefix=prefix,
            )
            wf, params = plan.workflow, plan.params
            params = params.with_resolved_seed(random.SystemRandom()) if params.seed == -1 else params
            if webhook_url is not None:
                await self.intake.guard(webhook_url)
        except BaseException:
            for f in staged.values():
                f.discard()
            raise
        # what ran, every field explicit: a retry re-validates exactly these (the prompt after
        # camera phrasing / enhancement, the preset's values), not the request's shorthands
        resolved_raw = dict(params.normalized())
        normalized = params.normalized()
        keyed = {**normalized, "drop_first_frames": drop_first_frames} if drop_first_frames else normalized
        digest = inputs_digest({k: f.sha256 for k, f in staged.items()})
        key = cache_key(wf.name, wf.graph_sha256, keyed, digest, params.seed)
        request = {
            "raw_params": resolved_raw,
            "params": normalized,
            "seed_requested": raw.get("seed", -1),
            "seedless_key": seedless_key(wf.name, wf.graph_sha256, keyed, digest),
            # seed -1 is a cache hit only when asked: then any earlier seed's result for these inputs
            "reuse_cached": bool(reuse_cached) and raw.get("seed", -1) == -1,
            **plan.request_record(),
        }
        if image is not None:
            request["image_sha256"] = image.sha256
            request["image_size"] = [image.width, image.height]
        others = {k: {"sha256": f.sha256} for k, f in staged.items() if k != "image"}
        if others:
            request["files"] = others
        if drop_first_frames:
            request["drop_first_frames"] = int(drop_first_frames)
        request.update(tags or {})
        return PreparedJob(wf.name, request, key, webhook_url, image, staged)

    async def create(
        self, prepared: PreparedJob, *, local_copy: Path | None = None, submitted_by: str | None = None
    ) -> Job:
        """Commit the prepared request's files and create (and start) its job; `submitted_by` names the
        API token it is created for (a story's segments and a batch's jobs carry the story's or batch's)."""
        request = dict(prepared.request)
        if prepared.image is not None:
            path = await asyncio.to_thread(prepared.image.commit, self.intake.inputs_dir)
            request["image_path"] = str(path)
        files = {k: dict(v) for k, v in (request.get("files") or {}).items()}
        for name, staged in prepared.files.items():
            if name == "image":
                continue
            path = await asyncio.to_thread(staged.commit, self.intake.inputs_dir)
            files.setdefault(name, {})["path"] = str(path)
        if files:
            request["files"] = files
        return await self.manager.submit(
            workflow=prepared.workflow,
            request=request,
            cache_key=prepared.cache_key,
            webhook_url=prepared.webhook_url,
            local_copy=local_copy,
            submitted_by=submitted_by,
        )


@dataclass
class PreparedJob:
    """A checked request that is not a job yet (see `Services.prepare`)."""

    workflow: str
    request: dict[str, Any]
    cache_key: str
    webhook_url: str | None
    image: InputImage | None
    files: dict[str, Any] = field(default_factory=dict)  # every staged input by name (image too)


def create_request_factory(
    settings: Settings, workflows: Callable[[str], Any] | None = None
) -> Callable[[Any], CreateRequest]:
    def make(workflow: Any) -> CreateRequest:
        # the job's workflow plus every POOL_WORKFLOWS one: each model file counted once (issue 11)
        disk_gb = _models_bytes([workflow, *_pool_workflows(settings, workflows)]) / 1e9
        disk_gb += settings.vast_disk_headroom_gb
        return CreateRequest(
            workflow=workflow.name,
            disk_gb=math.ceil(disk_gb * 10) / 10,
            min_gpu_ram_gb=settings.vast_min_gpu_ram_gb,
        )

    return make


def _pool_workflows(settings: Settings, workflows: Callable[[str], Any] | None) -> list[Any]:
    if workflows is None:
        return []
    return [workflows(name) for name in settings.pool_workflow_names()]


def _models_bytes(wfs: list[Any]) -> int:
    files: dict[tuple[str, str], int] = {}
    plain = 0
    for wf in wfs:
        models = getattr(wf, "models", None)
        if not models:  # a workflow object without a model list (test doubles): its total
            plain += int(getattr(wf, "disk_bytes", 0) or 0)
            continue
        for m in models:
            files[(m.folder, m.name)] = int(m.size or 0)
    return sum(files.values()) + plain


def assemble(
    settings: Settings,
    *,
    sessionmaker: async_sessionmaker,
    provider: Provider,
    preparer: InstancePreparer,
    comfy: ComfyConnector,
    store: Any,
    workflows: Callable[[str], Any],
    ledger: Ledger | None = None,
    engine: AsyncEngine | None = None,
    intake: ImageIntake | None = None,
    webhook_client: Any = None,
    webhook_backoff_s: tuple[float, ...] | None = None,
    slots_per_instance: int = 2,
) -> Services:
    for secret in settings.secret_values():
        register_secret(secret)
    data = settings.data_dir
    tmp_dir = data / "tmp"
    inputs_dir = data / "inputs"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    inputs_dir.mkdir(parents=True, exist_ok=True)
    repo = JobRepo(sessionmaker)
    events = EventHub()
    metrics = Metrics()
    pool = Pool(
        provider,
        preparer,
        create_request=create_request_factory(settings, workflows),
        ledger=ledger,
        max_instances=settings.pool_max_instances,
        spend_cap_usd=settings.spend_cap_usd,
        max_price_per_hour=settings.vast_max_price_per_hour,
        idle_ttl_s=settings.idle_ttl_s,
        ready_timeout_s=settings.instance_ready_timeout_s,
        slots_per_instance=slots_per_instance,
        disk_headroom_gb=settings.vast_disk_headroom_gb,
        pool_workflows=lambda: _pool_workflows(settings, workflows),
    )
    intake = intake or ImageIntake(
        inputs_dir,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        allow_loopback=settings.allow_loopback_urls,
        max_audio_bytes=settings.max_audio_bytes,
        max_audio_seconds=settings.max_audio_seconds,
    )
    webhooks = WebhookSender(
        repo,
        secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        client=webhook_client,
        build_request=intake.pinned_post,
        on_result=lambda outcome: metrics.webhooks.labels(outcome).inc(),
        **({"backoff_s": webhook_backoff_s} if webhook_backoff_s else {}),
    )

    groups = GroupRepo(sessionmaker)
    batches = BatchManager(groups, repo, webhooks)

    async def on_finished(job: Job) -> None:
        metrics.job_finished(job)
        await webhooks.enqueue(job)
        if (job.request or {}).get("batch_id"):
            try:
                await batches.job_ended(job)
            except Exception as exc:  # the batch is checked again at the next start
                log.warning("job %s: batch bookkeeping failed: %s", job.id, exc)

    runner = JobRunner(
        repo,
        pool,
        comfy,
        ResultCache(store, put_timeout_s=settings.store_put_timeout_s, retry_s=settings.store_retry_s),
        workflows,
        events,
        RunnerConfig(tmp_dir=tmp_dir, simulated=settings.simulated, job_timeout_s=settings.job_timeout_s),
        on_finished=on_finished,
    )
    manager = JobManager(repo, runner, events)
    cleaner = Cleaner(
        repo,
        provider,
        ledger,
        pool=pool,
        manager=manager,
        idle_ttl_s=settings.idle_ttl_s,
        instance_deadline_s=settings.instance_ready_timeout_s + settings.provision_timeout_s,
        job_timeout_s=settings.job_timeout_s,
        tmp_dirs=(tmp_dir, inputs_dir / ".staging"),
        inputs_dir=inputs_dir,
        on_action=lambda a: metrics.cleanup.labels(a.kind).inc(),
    )
    services = Services(
        settings=settings,
        sessionmaker=sessionmaker,
        repo=repo,
        events=events,
        provider=provider,
        ledger=ledger,
        pool=pool,
        store=store,
        workflows=workflows,
        runner=runner,
        manager=manager,
        webhooks=webhooks,
        cleaner=cleaner,
        intake=intake,
        metrics=metrics,
        engine=engine,
        groups=groups,
        batches=batches,
    )
    webhooks.fresh_result = services.fresh_urls
    batches.fresh_urls = services.fresh_urls
    services.stories = StoryManager(
        groups, repo, events, services=services, tmp_dir=tmp_dir / "stories", simulated=settings.simulated
    )
    services.fleet = Fleet(
        pool=pool,
        provider=provider,
        ledger=ledger,
        repo=repo,
        manager=manager,
        preparer=preparer,
        workflows=workflows,
        default_workflow=settings.default_workflow,
        spend_cap_usd=settings.spend_cap_usd,
    )
    return services
