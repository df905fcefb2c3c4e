"""Batches: many ordinary jobs submitted at once, and one signed webhook when the last of them ends.

The jobs are created first (each carries `batch_id` in its request record) and the batch row last, so a
crash in between leaves plain jobs, never a batch that waits for jobs that do not exist. Every job's end
runs `job_ended`, which ends the batch once all its jobs are terminal (a compare-and-set on the row, so
two jobs ending together still give one webhook). The webhook itself goes through the job webhooks'
sender (`WebhookSender.sources`): same signature, retries, backoff and persisted delivery state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from app.jobs.groups import Batch, BatchState, GroupRepo
from app.jobs.models import TERMINAL_STATES, Job, JobState
from app.jobs.repo import JobRepo
from app.jobs.webhooks import WebhookDelivery, WebhookSender

log = logging.getLogger(__name__)


class BatchManager:
    def __init__(
        self,
        groups: GroupRepo,
        repo: JobRepo,
        webhooks: WebhookSender,
        *,
        fresh_urls: Callable[[Job], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> None:
        self.groups, self.repo, self.webhooks = groups, repo, webhooks
        self.fresh_urls = fresh_urls
        webhooks.sources.append(self)

    async def start(self) -> None:
        """End batches whose last job ended while no process was watching."""
        for batch in await self.groups.running_batches():
            await self.check(batch.id)

    async def created(self, batch_id: str) -> None:
        """Right after the row is written: jobs that ended before it existed (cache hits) count now."""
        await self.check(batch_id)

    async def job_ended(self, job: Job) -> None:
        batch_id = (job.request or {}).get("batch_id")
        if batch_id:
            await self.check(str(batch_id))

    async def check(self, batch_id: str) -> bool:
        """End the batch if every job of it has ended. True when this call ended it."""
        try:
            batch = await self.groups.batch(batch_id)
        except LookupError:
            return False  # not written yet: `created` checks again
        if batch.state != BatchState.RUNNING.value:
            return False
        jobs = await self.repo.many(batch.job_ids)
        ended = [j for j in jobs.values() if JobState(j.state) in TERMINAL_STATES]
        if len(ended) < len(batch.job_ids):
            return False
        if not await self.groups.end_batch(batch_id, webhook=bool(batch.webhook_url)):
            return False
        counts = _counts(jobs.values())
        log.info("batch %s ended: %s", batch_id, ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        if batch.webhook_url:
            self.webhooks.wake()
        return True

    # --- views -------------------------------------------------------------------------------------
    async def view(
        self, batch: Batch, job_view: Callable[[Job], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        jobs = await self.repo.many(batch.job_ids)
        views = []
        for job_id in batch.job_ids:
            job = jobs.get(job_id)
            views.append(await job_view(job) if job is not None else {"job_id": job_id, "state": "missing"})
        return {
            "batch_id": batch.id,
            "state": batch.state,
            "total": len(batch.job_ids),
            "counts": _counts(jobs.values()),
            "created_at": batch.created_at,
            "finished_at": batch.finished_at,
            "cost_usd": round(sum(float(j.cost_usd or 0.0) for j in jobs.values()), 6),
            "submitted_by": batch.submitted_by,
            "webhook": (
                {
                    "status": batch.webhook_status,
                    "attempts": batch.webhook_attempts,
                    "last_error": batch.webhook_last_error,
                }
                if batch.webhook_url
                else None
            ),
            "jobs": views,
        }

    # --- WebhookSource -----------------------------------------------------------------------------
    async def webhooks_due(self, now: float) -> list[WebhookDelivery]:
        out = []
        for batch in await self.groups.batch_webhooks_due(now):

            async def record(batch_id: str = batch.id, **fields: Any) -> None:
                await self.groups.set_batch_fields(batch_id, **fields)

            out.append(
                WebhookDelivery(
                    id=batch.id,
                    url=batch.webhook_url or "",
                    msg_id=f"msg_{batch.id}_ended",  # the same on every retry: receivers deduplicate
                    attempts=batch.webhook_attempts or 0,
                    body=await self._payload(batch),
                    record=record,
                )
            )
        return out

    async def _payload(self, batch: Batch) -> dict[str, Any]:
        async def job_view(job: Job) -> dict[str, Any]:
            data = job.to_public()
            if job.state == JobState.SUCCEEDED.value and self.fresh_urls is not None:
                data["result"] = await self.fresh_urls(job)
            return data

        data = await self.view(batch, job_view)
        return {
            "type": "batch.ended",
            "timestamp": datetime.fromtimestamp(batch.finished_at or time.time(), UTC).isoformat(),
            "data": data,
        }


def _counts(jobs: Any) -> dict[str, int]:
    out = {s.value: 0 for s in JobState}
    for job in jobs:
        out[job.state] = out.get(job.state, 0) + 1
    return out
