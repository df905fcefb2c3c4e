"""Runs one job from its row to a terminal state: cache, lease, provision, ComfyUI, store, result.

Nothing is dropped silently: every exception ends the job as failed with a kind and a redacted message,
a user cancel stops the prompt on the GPU before the job is marked cancelled, and a shutdown (task
cancelled without a reason) leaves the row as it is so restart recovery can pick the job up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.comfy.errors import ComfyUnavailable
from app.comfy.errors import PromptLost as ComfyPromptLost
from app.jobs.cache import Coalescer
from app.jobs.errors import (
    InputMissing,
    JobCancelled,
    JobError,
    JobTimeout,
    OutputMissing,
    PromptLost,
    classify,
)
from app.jobs.events import EventHub
from app.jobs.models import IllegalTransition, Job, JobState
from app.jobs.ports import ComfyConnector, ComfySession
from app.jobs.repo import JobRepo
from app.pool.errors import InstanceGone
from app.pool.ports import Progress
from app.pool.scheduler import Lease, Pool
from app.redact import redact
from app.store.fileops import FileOps
from app.workflows.trim import drop_leading_frames

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif")
# Where each state sits on the overall 0..1 bar.
_BANDS: dict[str, tuple[float, float]] = {
    "queued": (0.0, 0.0),
    "acquiring": (0.0, 0.02),
    "provisioning": (0.02, 0.30),
    "running": (0.30, 0.95),
    "uploading": (0.95, 1.0),
}
MAX_ATTEMPTS = 2


@dataclass
class RunnerConfig:
    tmp_dir: Path
    simulated: bool = False
    job_timeout_s: float = 1800.0
    progress_write_interval_s: float = 1.0


@dataclass
class _RunState:
    job_id: str
    state: str = "queued"
    stage: str = "queued"
    progress: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)
    prompt_id: str | None = None
    session: ComfySession | None = None
    first_sample_at: float | None = None
    last_write: float = 0.0
    write_task: asyncio.Task | None = None
    timeout: asyncio.Timeout | None = None
    prompt_write: asyncio.Task | None = None


class JobRunner:
    # after a finished job: (instance, job id, workflow name, params, gpu_s) -> record host figures
    host_recorder: Any = None

    def __init__(
        self,
        repo: JobRepo,
        pool: Pool,
        comfy: ComfyConnector,
        results: Any,
        workflows: Callable[[str], Any],
        events: EventHub,
        config: RunnerConfig,
        *,
        coalescer: Coalescer | None = None,
        on_finished: Callable[[Job], Awaitable[None]] | None = None,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo, self.pool, self.comfy, self.results = repo, pool, comfy, results
        self.workflows, self.events, self.config = workflows, events, config
        self.coalescer = coalescer or Coalescer()
        self.on_finished = on_finished
        self._mono = mono
        self.cancel_reasons: dict[str, str] = {}  # job id -> why its task is being cancelled
        self.local_copies: dict[str, Path] = {}  # job id -> where the CLI wants the video
        self.forced_failures: dict[str, tuple[str, str]] = {}  # job id -> (kind, message) set by the cleanup
        self.requeue_reasons: dict[str, str] = {}  # job id -> why it leaves its instance (destroyed)
        self._files = FileOps()  # stat/mkdir/rmtree of concurrent jobs share thread hops
        # Replicas: whether this replica still holds the job's claim (app.jobs.claims.JobClaims.owns)
        self.owns: Callable[[str], Awaitable[bool]] | None = None

    # --- entry point -------------------------------------------------------------------------------
    async def run(self, job_id: str, *, reattach: bool = False) -> Job | None:
        job = await self.repo.peek(job_id)
        if job is None or job.terminal:
            return job
        rs = _RunState(job_id, state=job.state, stage=job.stage or job.state, last_write=self._mono())
        remaining = job.created_at + self.config.job_timeout_s - time.time()
        try:
            async with asyncio.timeout(max(0.0, remaining)) as rs.timeout:
                while True:
                    try:
                        return await self._attempt(job, rs, reattach=reattach)
                    except Exception as exc:
                        retry = getattr(exc, "retryable", False) and job.attempts + 1 < MAX_ATTEMPTS
                        if not retry or rs.state == JobState.QUEUED.value:  # nothing ran yet: just fail
                            raise
                        log.warning("job %s: retrying after %s", job_id, redact(str(exc)))
                        job = await self._transition(
                            rs,
                            JobState.QUEUED,
                            attempts=job.attempts + 1,
                            comfy_prompt_id=None,
                            stage="requeued",
                        )
                        reattach = False
        except asyncio.CancelledError:
            requeue = self.requeue_reasons.pop(job_id, None)
            if requeue is not None and job_id not in self.cancel_reasons:
                return await self._requeue(rs, requeue)
            reason = self.cancel_reasons.pop(job_id, None)
            if reason is None:  # shutdown: leave the row for restart recovery
                raise
            await self._stop_gpu_work(rs)
            forced = self.forced_failures.pop(job_id, None)
            if forced is not None:
                err = JobError(forced[1])
                err.kind = forced[0]
                return await self._end(rs, JobState.FAILED, error=err)
            return await self._end(rs, JobState.CANCELLED, error=JobCancelled(reason))
        except TimeoutError:
            await self._stop_gpu_work(rs)
            return await self._end(
                rs,
                JobState.FAILED,
                error=JobTimeout(
                    f"the job did not finish within {self.config.job_timeout_s:.0f} s "
                    f"(it was {rs.stage}); try again or raise JOB_TIMEOUT_S"
                ),
            )
        except Exception as exc:
            if self.owns is not None and not await self._owned(job_id):
                # Replicas: another replica took the job over (this one was too slow to renew its claim)
                # and moved the row on; its prompt is theirs now. Leave both alone.
                log.warning(
                    "job %s: taken over by another replica; leaving it (%s)", job_id, redact(str(exc))
                )
                return None
            await self._stop_gpu_work(rs)
            return await self._end(rs, JobState.FAILED, error=exc)
        finally:
            self.cancel_reasons.pop(job_id, None)
            self.forced_failures.pop(job_id, None)
            self.requeue_reasons.pop(job_id, None)
            if rs.write_task is not None and not rs.write_task.done():
                rs.write_task.cancel()

    async def _owned(self, job_id: str) -> bool:
        try:
            return await self.owns(job_id)
        except Exception:  # cannot tell: behave as without replicas
            return True

    async def _requeue(self, rs: _RunState, reason: str) -> Job | None:
        """The job's instance is being taken away (DELETE /instances/{id}): stop its prompt there and put
        it back in the queue, without counting an attempt (nothing was wrong with the job). The caller
        (`JobManager.requeue`) starts it again."""
        await self._stop_gpu_work(rs)
        current = await self.repo.require(rs.job_id)
        if current.terminal:
            return current
        if current.state != JobState.QUEUED.value:
            await self.repo.transition(
                rs.job_id,
                JobState.QUEUED,
                comfy_prompt_id=None,
                instance_id=None,
                stage=f"requeued: {reason}"[:64],
            )
        log.info("job %s requeued: %s", rs.job_id, reason)
        return None

    # --- one attempt -------------------------------------------------------------------------------
    async def _attempt(self, job: Job, rs: _RunState, *, reattach: bool) -> Job:
        wf = self.workflows(job.workflow)
        req = job.request or {}
        image_path: Path | None = Path(req["image_path"]) if req.get("image_path") else None
        for name, path in [("image", image_path), *_file_inputs(req)]:
            if path is not None and not await self._files.run(path.is_file):
                raise InputMissing(
                    f"the job's input {name} is gone from the data directory; submit the request again"
                )
        if image_path is None and wf.inputs.image.required:
            raise InputMissing("the job has no input image; submit the request again")
        params = wf.validate(req["raw_params"], tuple(req["image_size"]) if req.get("image_size") else None)
        key = job.cache_key

        leader = False
        if key and not reattach:
            hit = await self._cache_hit(rs, job, params, key)
            if hit is not None:
                return hit
            while (fut := await self.coalescer.aclaim(key)) is not None:
                self._progress(rs, Progress("waiting for an identical request"))
                if await asyncio.shield(fut):
                    hit = await self._cache_hit(rs, job, params, key)
                    if hit is not None:
                        return hit
            leader = True
        ok = False
        try:
            result = await self._on_gpu(job, rs, wf, params, image_path, key, reattach=reattach)
            ok = True
            return result
        finally:
            if leader and key:
                await self.coalescer.afinish(key, ok)

    async def _cache_hit(self, rs: _RunState, job: Job, params: Any, key: str) -> Job | None:
        found = self._usable(await self.results.lookup(key))
        request = job.request or {}
        if found is None and request.get("reuse_cached") and request.get("seedless_key"):
            found = self._usable(await self.results.lookup_latest(request["seedless_key"]))
            if found is not None:
                params = replace(params, seed=found.seed)  # report the seed that made this result
        if found is None:
            return None
        result = self._result(
            _as_encoded(params, request),
            video_url=found.video_url,
            last_frame_url=found.last_frame_url,
            size=found.size,
            cached=True,
            simulated=bool(found.simulated),
            timings={},
            cost=0.0,
            instance_id=None,
            store_key=found.key,
        )
        result.update(_reported(request))
        return await self._end(rs, JobState.SUCCEEDED, result=result, cost_usd=0.0)

    def _usable(self, found: Any) -> Any:
        """A simulated world's result (same DATA_DIR store) is no answer for a deployment on real GPUs."""
        if found is not None and found.simulated and not self.config.simulated:
            return None
        return found

    async def _on_gpu(
        self,
        job: Job,
        rs: _RunState,
        wf: Any,
        params: Any,
        image_path: Path | None,
        key: str | None,
        *,
        reattach: bool,
    ) -> Job:
        if not reattach:
            await self._transition(rs, JobState.ACQUIRING, stage="waiting for an instance")
        lease: Lease = await self.pool.lease(
            job.id,
            wf,
            instance_id=job.instance_id if reattach else None,
            on_wait=lambda what: self._progress(rs, Progress(what)),
        )
        inst = lease.instance
        tmp = self.config.tmp_dir / job.id
        try:
            video, frame, gpu_s = await self._use_instance(
                job, rs, lease, wf, params, image_path, tmp, reattach
            )
            lease.note_reached()
        except BaseException as exc:
            if _instance_broken(exc):
                lease.mark_bad(f"job {job.id}: {redact(str(exc))}")
            elif isinstance(exc, ComfyUnavailable) and not isinstance(
                exc, ComfyPromptLost
            ):  # reachable, restarted
                lease.note_unreachable(f"job {job.id}: {redact(str(exc))}")
            elif str(getattr(exc, "kind", "")) == "model_corrupt":
                lease.invalidate(wf)  # provision again before the next job uses this workflow
            raise
        finally:
            rs.session = None
            await asyncio.shield(lease.release())
        try:
            return await self._store(job, rs, wf, params, key, inst, lease.provision_s, video, frame, gpu_s)
        finally:
            await self._files.run(shutil.rmtree, tmp, True)

    async def _use_instance(
        self,
        job: Job,
        rs: _RunState,
        lease: Lease,
        wf: Any,
        params: Any,
        image_path: Path | None,
        tmp: Path,
        reattach: bool,
    ) -> tuple[Path, Path, float]:
        """Everything that needs the instance: prepare, run the prompt, fetch the outputs to `tmp`."""
        inst = lease.instance
        if lease.needs_preparation(wf) and not reattach:
            await self._transition(rs, JobState.PROVISIONING, instance_id=inst.id, stage="provisioning")
        try:
            target = await lease.ensure_ready(wf, lambda p: self._progress(rs, p))
        except Exception as exc:
            # An instance that cannot be made ready would fail every job sent to it and never look idle
            # to the reaper: take it out of the pool (rented ones are destroyed, static ones set aside).
            lease.mark_bad(f"preparing it for {wf.name} failed: {redact(str(exc))}")
            raise
        await self._files.run(_mkdir, tmp)
        async with self.comfy(target) as session:
            rs.session = session
            try:
                outcome, gpu_s = await self._prompt(job, rs, session, wf, params, image_path, inst, reattach)
            except BaseException as exc:
                if self._should_stop_gpu(rs, exc):
                    await self._stop_gpu_work(rs)
                raise
            if rs.state != JobState.UPLOADING.value:
                await self._transition(rs, JobState.UPLOADING, stage="downloading outputs")
            outputs = await session.download_outputs(outcome, tmp)
            video = next((p for p in outputs if p.suffix.lower() in VIDEO_SUFFIXES), None)
            if video is None:
                raise OutputMissing(
                    f"ComfyUI finished but produced no video (outputs: {[p.name for p in outputs]}); "
                    f"check the workflow's video node {getattr(wf, 'video_node', '?')}"
                )
            frame = tmp / "last_frame.png"
            await session.extract_last_frame(video, frame)
        return video, frame, gpu_s

    async def _store(
        self,
        job: Job,
        rs: _RunState,
        wf: Any,
        params: Any,
        key: str | None,
        inst: Any,
        provision_s: float,
        video: Path,
        frame: Path,
        gpu_s: float,
    ) -> Job:
        """Upload the outputs (the instance is already free for the next job) and finish the job."""
        self._progress(rs, Progress("storing outputs", 0.5))
        simulated = self.config.simulated or inst.simulated
        params = _as_encoded(params, job.request or {})
        stored = await self.results.save(
            key or hashlib.sha256(job.id.encode()).hexdigest(),
            video=video,
            last_frame=frame,
            workflow=wf.name,
            seed=params.seed,
            frames=params.num_frames,
            fps=params.fps,
            width=params.width,
            height=params.height,
            simulated=simulated,
            job_id=job.id,
            seedless=(job.request or {}).get("seedless_key"),
        )
        local = self.local_copies.pop(job.id, None)
        if local is not None:
            await asyncio.to_thread(_copy, video, local)
        cost = round(inst.price_per_hour / 3600.0 * (gpu_s + provision_s), 6)
        if "ttff_s" not in inst.meta:  # the instance's time to first frame: rented -> first video made
            inst.meta["ttff_s"] = round(max(0.0, time.time() - inst.created_at), 3)
            inst.meta["first_job_gpu_s"] = round(gpu_s, 3)
        if self.host_recorder is not None:  # what this job measured about its host (app.pool.hosts)
            try:
                await self.host_recorder(inst, job.id, wf.name, params, gpu_s)
            except Exception as exc:
                log.warning("job %s: recording host figures failed: %s", job.id, redact(str(exc)))
        fresh = await self.repo.peek(job.id) or job
        timings = dict(fresh.timings or {})
        if fresh.stage_started_at is not None:  # the current state closes with the final transition
            timings[fresh.state] = round(
                timings.get(fresh.state, 0.0) + time.time() - fresh.stage_started_at, 6
            )
        result = self._result(
            params,
            video_url=stored.video_url,
            last_frame_url=stored.last_frame_url,
            size=stored.size,
            cached=False,
            simulated=simulated,
            timings={**timings, "gpu_s": round(gpu_s, 3), "provision_share_s": round(provision_s, 3)},
            cost=cost,
            instance_id=inst.id,
            store_key=stored.key,
        )
        result.update(_reported(job.request or {}))
        return await self._end(rs, JobState.SUCCEEDED, result=result, cost_usd=cost)

    async def _prompt(
        self,
        job: Job,
        rs: _RunState,
        session: ComfySession,
        wf: Any,
        params: Any,
        image_path: Path | None,
        inst: Any,
        reattach: bool,
    ) -> tuple[Any, float]:
        """Submit (or re-attach to) the prompt; returns the outputs handle and the GPU seconds used."""
        deadline = self._mono() + max(1.0, job.created_at + self.config.job_timeout_s - time.time())

        def on_progress(p: Progress) -> None:
            if rs.first_sample_at is None and (p.fraction or 0) > 0:
                rs.first_sample_at = self._mono()
            self._progress(rs, p)

        t0 = self._mono()
        if reattach and job.comfy_prompt_id:
            rs.prompt_id = job.comfy_prompt_id
            if job.cancel_requested:  # cancelled just before a restart: stop the prompt, do not follow it
                self.cancel_reasons.setdefault(job.id, "cancelled by the user")
                raise asyncio.CancelledError()
            outcome = await session.attach(job.comfy_prompt_id, deadline=deadline, on_progress=on_progress)
            if outcome is None:
                raise PromptLost(f"the ComfyUI on {inst.id} no longer knows prompt {job.comfy_prompt_id}")
        else:
            # RUNNING (with the instance) is on disk before anything reaches the GPU; the prompt id
            # follows the moment ComfyUI accepts the prompt, so a crash after that can re-attach.
            await self._transition(rs, JobState.RUNNING, instance_id=inst.id, stage="submitting")
            image_name = await session.upload_image(image_path) if image_path is not None else None
            uploaded = {
                name: await session.upload_image(path) for name, path in _file_inputs(job.request or {})
            }
            graph = wf.render(
                params,
                image_name,
                f"comfyfleet/{job.id}",
                end_image_name=uploaded.get("end_image"),
                audio_name=uploaded.get("audio"),
                **_render_extras(job.request or {}),
            )
            drop = int((job.request or {}).get("drop_first_frames") or 0)
            if drop:  # a story's later segment: its first frame repeats the previous segment's last one
                graph = drop_leading_frames(graph, wf.video_node, drop)

            def on_submitted(prompt_id: str) -> None:
                rs.prompt_id = prompt_id
                rs.prompt_write = asyncio.get_running_loop().create_task(
                    self.repo.update(job.id, comfy_prompt_id=prompt_id, stage="queued on GPU")
                )

            outcome = await session.run(
                graph,
                deadline=deadline,
                on_progress=on_progress,
                on_submitted=on_submitted,
                progress_nodes=list(getattr(wf, "progress_nodes", None) or []),
                keep_on_cancel=lambda: not self._should_stop_gpu(rs, asyncio.CancelledError()),
            )
            if rs.prompt_write is not None:
                await rs.prompt_write
        end = self._mono()
        # ComfyUI's own execution time (history timestamps) when the client reports it: it excludes the
        # time a queued-ahead prompt waited for the GPU. Else: first sampling progress to completion.
        reported = getattr(outcome, "execution_s", None)
        if isinstance(reported, int | float) and reported >= 0:
            gpu_s = float(reported)
        else:
            gpu_s = end - (rs.first_sample_at or t0)
        rs.prompt_id = None  # done: nothing left to cancel on the GPU
        return outcome, gpu_s

    def _should_stop_gpu(self, rs: _RunState, exc: BaseException) -> bool:
        """A shutdown leaves the prompt running for recovery; a cancel, a timeout or a failure stops it."""
        if isinstance(exc, asyncio.CancelledError):
            expired = rs.timeout is not None and rs.timeout.expired()
            return expired or rs.job_id in self.cancel_reasons
        return True

    async def _stop_gpu_work(self, rs: _RunState) -> None:
        """Cancel our prompt on ComfyUI (pending or running) so a cancel or a timeout frees the GPU."""
        if rs.session is None or rs.prompt_id is None:
            return
        try:
            await asyncio.shield(asyncio.wait_for(rs.session.cancel(rs.prompt_id), 15))
        except Exception as exc:
            log.warning("job %s: could not cancel prompt %s: %s", rs.job_id, rs.prompt_id, redact(str(exc)))

    # --- bookkeeping -------------------------------------------------------------------------------
    @staticmethod
    def _result(
        params: Any,
        *,
        video_url,
        last_frame_url,
        size,
        cached,
        simulated,
        timings,
        cost,
        instance_id,
        store_key,
    ):
        """`store_key` names the stored objects (a `reuse_cached` hit has another seed's key than the job)."""
        return {
            "store_key": store_key,
            "video_url": video_url,
            "last_frame_url": last_frame_url,
            "seed": params.seed,
            "num_frames": params.num_frames,
            "fps": params.fps,
            "width": params.width,
            "height": params.height,
            "resolution": f"{params.width}x{params.height}",
            "video_size_bytes": size,
            "cached": cached,
            "simulated": simulated,
            "timings": timings,
            "cost_usd": cost,
            "instance_id": instance_id,
        }

    async def _transition(self, rs: _RunState, target: JobState, **fields: Any) -> Job:
        job = await self.repo.transition(rs.job_id, target, **fields)
        rs.state, rs.stage = job.state, job.stage or job.state
        lo, _hi = _BANDS.get(job.state, (1.0, 1.0))
        rs.progress = max(rs.progress, lo) if target is not JobState.QUEUED else 0.0
        rs.detail = {}
        self._publish(rs)
        if job.cancel_requested and target not in (JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED):
            self.cancel_reasons.setdefault(rs.job_id, "cancelled by the user")
            raise asyncio.CancelledError()
        return job

    async def _end(
        self, rs: _RunState, target: JobState, *, error: BaseException | None = None, **fields
    ) -> Job:
        if error is not None:
            kind, message = classify(error)
            fields.update(error_kind=kind, error_message=message)
            log.info("job %s %s: %s", rs.job_id, target.value, message)
        try:
            job = await asyncio.shield(self.repo.transition(rs.job_id, target, **fields))
        except IllegalTransition:  # ended elsewhere (cancel, cleanup): the first end wins
            job = await self.repo.require(rs.job_id)
        rs.state, rs.stage = job.state, job.stage or job.state
        rs.progress = job.progress or rs.progress
        public = job.to_public() if self.events.wants(rs.job_id) else {}  # `wait` needs only "_job"
        self.events.publish(rs.job_id, {"event": "end", **public, "_job": job})
        if self.on_finished is not None:
            try:
                await self.on_finished(job)
            except Exception as exc:  # webhooks/metrics must never undo a finished job
                log.warning("job %s: completion hook failed: %s", rs.job_id, redact(str(exc)))
        return job

    def _progress(self, rs: _RunState, p: Progress) -> None:
        rs.stage = p.stage
        rs.detail = dict(p.detail)
        if p.fraction is not None:
            lo, hi = _BANDS.get(rs.state, (rs.progress, rs.progress))
            rs.progress = max(rs.progress, lo + (hi - lo) * min(1.0, max(0.0, p.fraction)))
        self._publish(rs, fraction=p.fraction)
        now = self._mono()
        if now - rs.last_write >= self.config.progress_write_interval_s and (
            rs.write_task is None or rs.write_task.done()
        ):
            rs.last_write = now
            rs.write_task = asyncio.get_running_loop().create_task(
                self.repo.update(rs.job_id, progress=rs.progress, stage=rs.stage[:64])
            )

    def _publish(self, rs: _RunState, fraction: float | None = None) -> None:
        if not self.events.wants(rs.job_id):
            return
        self.events.publish(
            rs.job_id,
            {
                "event": "progress",
                "job_id": rs.job_id,
                "state": rs.state,
                "stage": rs.stage,
                "progress": round(rs.progress, 4),
                "stage_progress": fraction,
                "detail": rs.detail,
            },
        )


def _instance_broken(exc: BaseException) -> bool:
    """The instance cannot be trusted with another job (gone, or a poisoned GPU context)."""
    return (
        isinstance(exc, InstanceGone)
        or bool(getattr(exc, "instance_broken", False))
        or str(getattr(exc, "kind", "")) == "device_fault"
    )


def _as_encoded(params: Any, request: dict[str, Any]) -> Any:
    """The parameters as the stored video has them: frames cut before the encoder are not in it."""
    drop = int(request.get("drop_first_frames") or 0)
    if drop and getattr(params, "num_frames", None):
        return replace(params, num_frames=max(1, params.num_frames - drop))
    return params


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _file_inputs(request: dict[str, Any]) -> list[tuple[str, Path]]:
    """The job's file inputs besides the start image (end_image, audio), as committed paths."""
    files = request.get("files") or {}
    return [(name, Path(info["path"])) for name, info in sorted(files.items()) if info.get("path")]


def _render_extras(request: dict[str, Any]) -> dict[str, Any]:
    """What the plan fixed at submit time that rendering needs again (audio length, camera pose)."""
    out: dict[str, Any] = {}
    if request.get("audio_seconds") is not None:
        out["audio_seconds"] = request["audio_seconds"]
    if request.get("camera_pose") is not None:
        out["camera_pose"] = request["camera_pose"]
    return out


def _reported(request: dict[str, Any]) -> dict[str, Any]:
    """What the result says about how the request was planned (issue 11): the prompt that ran and what
    quality_preset / camera_motion / enhance_prompt did."""
    out: dict[str, Any] = {}
    prompt = (request.get("params") or {}).get("prompt")
    if prompt is not None:
        out["prompt"] = prompt
    if request.get("applied"):
        out["applied"] = request["applied"]
    if request.get("audio_seconds") is not None:
        out["audio_seconds"] = request["audio_seconds"]
    return out
