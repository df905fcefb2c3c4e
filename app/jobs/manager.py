"""Owns the asyncio task of every active job: submit, cancel, wait, and restart recovery.

One task per active job is cheap (a waiting job is one parked future in the pool). The manager is the
only place that cancels a job's task, and it always says why first, so the runner can tell a user cancel
(stop the GPU, mark cancelled) from a shutdown (leave the row for recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from app.jobs.events import EventHub
from app.jobs.models import Job, JobState
from app.jobs.repo import JobNotFound, JobRepo
from app.jobs.runner import MAX_ATTEMPTS, JobRunner
from app.redact import redact

log = logging.getLogger(__name__)


class JobManager:
    def __init__(self, repo: JobRepo, runner: JobRunner, events: EventHub) -> None:
        self.repo, self.runner, self.events = repo, runner, events
        self.tasks: dict[str, asyncio.Task] = {}
        self._stopping = False
        self.claims: Any = None  # app.jobs.claims.JobClaims when replicas share the database

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> list[tuple[str, str]]:
        """Recover jobs a previous process left active. Returns (job id, action) pairs."""
        self._stopping = False
        return await self.recover()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Cancel every job task without a reason: rows stay as they are, for the next start."""
        self._stopping = True
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)

    async def recover(self) -> list[tuple[str, str]]:
        actions: list[tuple[str, str]] = []
        if self.claims is not None:  # replicas: only jobs whose replica is gone (claimed here now)
            ids = await self.claims.claim_orphans(limit=100_000, own=True)
            jobs = sorted(
                (j for j in (await self.repo.many(ids)).values() if not j.terminal),
                key=lambda j: j.created_at,
            )
        else:
            jobs = await self.repo.active()
        for job in jobs:
            if job.id in self.tasks:
                continue
            actions.append((job.id, await self.recover_job(job)))
        for job_id, action in actions:
            log.info("recovery: job %s %s", job_id, action)
        return actions

    async def recover_job(self, job: Job) -> str:
        """Resume one job a previous process (or a dead replica) left active; returns what was done."""
        state = JobState(job.state)
        try:
            if state is JobState.QUEUED:
                self.spawn(job.id)
                return "resumed"
            if state in (JobState.ACQUIRING, JobState.PROVISIONING):
                # Nothing ran on a GPU yet: waiting again is always safe.
                await self.repo.transition(job.id, JobState.QUEUED, stage="requeued after restart")
                self.spawn(job.id)
                return "requeued"
            if job.comfy_prompt_id and job.instance_id:
                self.spawn(job.id, reattach=True)
                return "reattaching"
            if job.attempts + 1 < MAX_ATTEMPTS:
                await self.repo.transition(
                    job.id, JobState.QUEUED, attempts=job.attempts + 1, stage="requeued after restart"
                )
                self.spawn(job.id)
                return "requeued"
            ended = await self.repo.transition(
                job.id,
                JobState.FAILED,
                error_kind="lost_on_restart",
                error_message="the service restarted while the job was on a GPU, and it had already "
                "been retried once; submit it again",
            )
            await self._ended(ended)
            return "failed"
        except Exception as exc:  # one bad row must not stop recovery of the others
            log.error("recovery of job %s failed: %s", job.id, redact(str(exc)))
            return f"error: {redact(str(exc))}"

    # --- jobs --------------------------------------------------------------------------------------
    async def submit(self, *, local_copy: Path | None = None, **fields: Any) -> Job:
        if self.claims is not None:
            fields.update(self.claims.fresh())
        job = await self.repo.create(**fields)
        if local_copy is not None:
            self.runner.local_copies[job.id] = local_copy
        self.spawn(job.id)
        return job

    def spawn(self, job_id: str, *, reattach: bool = False) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._run(job_id, reattach), name=f"job-{job_id}")
        self.tasks[job_id] = task
        return task

    async def _run(self, job_id: str, reattach: bool) -> None:
        try:
            await self.runner.run(job_id, reattach=reattach)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the runner ends jobs itself; this is the last line of defence
            log.exception("job %s: runner crashed", job_id)
            with contextlib.suppress(Exception):
                ended = await self.repo.transition(
                    job_id,
                    JobState.FAILED,
                    error_kind="internal",
                    error_message=f"internal error: {redact(str(exc))}",
                )
                await self._ended(ended)
        finally:
            if self.tasks.get(job_id) is asyncio.current_task():
                self.tasks.pop(job_id, None)

    async def cancel(self, job_id: str, reason: str = "cancelled by the user") -> Job:
        job = await self.repo.request_cancel(job_id)
        if job.terminal:
            return job
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            self.runner.cancel_reasons[job_id] = reason
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 30)
        else:
            with contextlib.suppress(Exception):
                ended = await self.repo.transition(
                    job_id, JobState.CANCELLED, error_kind="cancelled", error_message=reason
                )
                await self._ended(ended)
        return await self.repo.require(job_id)

    async def requeue(self, job_id: str, reason: str) -> Job:
        """Take a job off its instance and queue it again (its instance is being destroyed). Its prompt
        is stopped, the attempt is not counted, and it runs again on whatever instance the pool gives."""
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            self.runner.requeue_reasons[job_id] = reason
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 30)
        job = await self.repo.require(job_id)
        if not job.terminal and not self._stopping:
            current = self.tasks.get(job_id)
            if current is None or current.done():
                self.spawn(job_id)
        return job

    async def fail(self, job_id: str, kind: str, message: str) -> bool:
        """End a job from outside its runner (the cleanup's stuck-job rule). Stops its GPU work too."""
        task = self.tasks.get(job_id)
        if task is not None and not task.done():
            self.runner.cancel_reasons[job_id] = message
            self.runner.forced_failures[job_id] = (kind, message)
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 30)
            job = await self.repo.require(job_id)
            return job.state == JobState.FAILED.value
        try:
            ended = await self.repo.transition(
                job_id, JobState.FAILED, error_kind=kind, error_message=message
            )
        except Exception:
            return False
        await self._ended(ended)
        return True

    async def _ended(self, job: Job) -> None:
        """A job ended here rather than in its runner: tell waiters and streams, and run the completion
        hook (metrics, webhook) exactly as the runner's own end does."""
        public = job.to_public() if self.events.wants(job.id) else {}
        self.events.publish(job.id, {"event": "end", **public, "_job": job})
        hook = self.runner.on_finished
        if hook is not None:
            try:
                await hook(job)
            except Exception as exc:  # webhooks/metrics must never undo a finished job
                log.warning("job %s: completion hook failed: %s", job.id, redact(str(exc)))

    async def wait(self, job_id: str, seconds: float) -> Job:
        """Return the job once it ends or `seconds` pass, whichever is first."""
        deadline = time.monotonic() + seconds
        with self.events.ended(job_id) as end:
            while True:
                job = await self.repo.peek(job_id)
                if job is None:
                    raise JobNotFound(job_id)
                if job.terminal:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return job
                # Re-read every 5 s: a job ended by another process publishes nothing here (replicas
                # publish other replicas' ends here too: app.jobs.claims.Replica.poll_rows).
                done, _ = await asyncio.wait([end], timeout=min(left, 5.0))
                if done:
                    ended = end.result().get("_job")
                    return ended if isinstance(ended, Job) else await self.repo.require(job_id)
