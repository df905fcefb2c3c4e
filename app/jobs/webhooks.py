"""Signed completion webhooks (Standard Webhooks), delivered by their own task with retries.

Delivery state lives on the job row (status, attempts, next attempt time), so a restart continues where the
last process stopped. A receiver that hangs or fails costs one bounded HTTP attempt per backoff step and
can never block a job runner or crash the service.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from app.jobs.models import Job
from app.jobs.repo import JobRepo
from app.redact import redact

log = logging.getLogger(__name__)

DEFAULT_BACKOFF_S = (2.0, 10.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)


def secret_bytes(secret: str) -> bytes:
    """Standard Webhooks secrets look like `whsec_<base64>`; anything else is used as raw bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: recompute the signature and check the timestamp is recent."""
    h = {k.lower(): v for k, v in headers.items()}
    try:
        ts = int(h["webhook-timestamp"])
        expected = sign(secret, h["webhook-id"], ts, body)
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    return any(hmac.compare_digest(expected, s) for s in h.get("webhook-signature", "").split())


def payload(job: Job, result: dict[str, Any] | None = None) -> dict[str, Any]:
    data = job.to_public()
    if result is not None:
        data["result"] = result
    return {
        "type": f"job.{job.state}",
        "timestamp": datetime.fromtimestamp(job.finished_at or time.time(), UTC).isoformat(),
        "data": data,
    }


@dataclass
class WebhookDelivery:
    """One message another kind of record (a batch) wants sent: same signing, retries and backoff as a
    job's. `record(**fields)` writes the delivery state (webhook_status, webhook_attempts,
    webhook_next_at, webhook_last_error) back onto that record."""

    id: str
    url: str
    msg_id: str
    attempts: int
    body: dict[str, Any]
    record: Callable[..., Awaitable[None]]


class WebhookSource(Protocol):
    """Records besides jobs that carry webhook state (`app.jobs.batches`)."""

    async def webhooks_due(self, now: float) -> list[WebhookDelivery]: ...


class WebhookSender:
    def __init__(
        self,
        repo: JobRepo,
        *,
        secret: str | None,
        client: httpx.AsyncClient | None = None,
        build_request: Callable[[httpx.AsyncClient, str, bytes, dict], Awaitable[httpx.Request]]
        | None = None,
        backoff_s: tuple[float, ...] = DEFAULT_BACKOFF_S,
        max_attempts: int = 8,
        timeout_s: float = 10.0,
        poll_interval_s: float = 1.0,
        concurrency: int = 8,
        on_result: Callable[[str], None] | None = None,
        fresh_result: Callable[[Job], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> None:
        self.repo = repo
        self.secret = secret
        self._client = client
        self._own_client = client is None
        # Builds the POST (the API's SSRF guard pins it to a checked public address); None = plain POST.
        self.build_request = build_request
        self.backoff_s = backoff_s
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self.on_result = on_result
        # The job's result with URLs made now: presigned URLs expire before late retries are sent.
        self.fresh_result = fresh_result
        self._warned_unsigned = False
        self.sources: list[WebhookSource] = []  # batches: one webhook per batch, same delivery
        # Replicas: one replica takes each due delivery (app.jobs.claims.JobClaims.take_webhook)
        self.take: Callable[[Job], Awaitable[bool]] | None = None
        self._finished: dict[str, float] = {}  # delivery id -> when its last attempt ended (monotonic)

    def wake(self) -> None:
        """Something became due (a batch ended): scan now instead of at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="webhooks")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._inflight.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def enqueue(self, job: Job) -> None:
        """Called when a job ends: mark its webhook due now (persisted) and wake the sender."""
        if not job.webhook_url:
            return
        if self.secret is None and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        await self.repo.set_fields(job.id, webhook_status="pending", webhook_next_at=time.time())
        self._wake.set()

    async def resume_never_enqueued(self) -> int:
        """At start, before any job runs here: webhooks of jobs that ended just before a crash."""
        ids = await self.repo.webhooks_never_enqueued()
        for job_id in ids:
            await self.repo.set_fields(job_id, webhook_status="pending", webhook_next_at=time.time())
        if ids:
            log.info("webhooks: %d never enqueued before the last shutdown; sending them now", len(ids))
            self._wake.set()
        return len(ids)

    def _startable(self, delivery_id: str, scanned_at: float) -> bool:
        """Not in flight, and its last attempt did not end after this scan read the rows: such a row is a
        stale snapshot (it may still say "pending" for a webhook just delivered, which would then be sent
        twice). The next scan reads it fresh."""
        return delivery_id not in self._inflight and self._finished.get(delivery_id, -1.0) < scanned_at

    def _track(self, delivery_id: str, task: asyncio.Task[None]) -> None:
        self._inflight[delivery_id] = task

        def done(_t: asyncio.Task[None]) -> None:
            self._inflight.pop(delivery_id, None)
            self._finished[delivery_id] = time.monotonic()

        task.add_done_callback(done)

    async def _loop(self) -> None:
        while True:
            try:
                scanned_at = time.monotonic()
                self._finished = {k: t for k, t in self._finished.items() if t >= scanned_at - 60}
                for job in await self.repo.webhooks_due(time.time()):
                    if self._startable(job.id, scanned_at) and (self.take is None or await self.take(job)):
                        self._track(
                            job.id, asyncio.get_running_loop().create_task(self._deliver_guarded(job))
                        )
                for source in self.sources:
                    for item in await source.webhooks_due(time.time()):
                        if self._startable(item.id, scanned_at):
                            task = asyncio.get_running_loop().create_task(self._deliver_item_guarded(item))
                            self._track(item.id, task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database hiccup must not end webhook delivery for good
                log.warning("webhooks: scan failed: %s", redact(str(exc)))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval_s):
                    await self._wake.wait()

    async def _deliver_guarded(self, job: Job) -> None:
        async with self._sem:
            try:
                await self.deliver(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook for %s: unexpected error: %s", job.id, redact(str(exc)))

    async def _deliver_item_guarded(self, item: WebhookDelivery) -> None:
        async with self._sem:
            try:
                await self.deliver_item(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook for %s: unexpected error: %s", item.id, redact(str(exc)))

    async def deliver(self, job: Job) -> bool:
        """One attempt. Success -> delivered; failure -> next attempt scheduled, or failed for good."""
        result = None
        if self.fresh_result is not None and job.result:
            with contextlib.suppress(Exception):  # the stored URLs are still the best answer we have
                result = await self.fresh_result(job)

        async def record(**fields: Any) -> None:
            await self.repo.set_fields(job.id, **fields)

        return await self.deliver_item(
            WebhookDelivery(
                id=job.id,
                url=job.webhook_url or "",
                msg_id=f"msg_{job.id}_{job.state}",  # the same on every retry, so receivers can deduplicate
                attempts=job.webhook_attempts or 0,
                body=payload(job, result),
                record=record,
            )
        )

    async def deliver_item(self, item: WebhookDelivery) -> bool:
        """One signed POST of `item`, and its outcome written back through `item.record`."""
        assert self._client is not None, "start() first"
        if self.secret is None and not self._warned_unsigned:
            self._warned_unsigned = True
            log.warning("WEBHOOK_SECRET is not set: webhooks are sent unsigned")
        body = json.dumps(item.body, separators=(",", ":"), sort_keys=True, default=str).encode()
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": item.msg_id,
            "webhook-timestamp": str(ts),
            "user-agent": "comfyfleet-webhooks",
        }
        if self.secret:
            headers["webhook-signature"] = sign(self.secret, item.msg_id, ts, body)
        attempts = item.attempts + 1
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.build_request is not None:
                    req = await self.build_request(self._client, item.url, body, headers)
                else:
                    req = self._client.build_request("POST", item.url, content=body, headers=headers)
                # Only the status matters: the receiver's body is never read (it could be endless).
                resp = await self._client.send(req, stream=True)
                await resp.aclose()
            if 200 <= resp.status_code < 300:
                await item.record(
                    webhook_status="delivered",
                    webhook_attempts=attempts,
                    webhook_next_at=None,
                    webhook_last_error=None,
                )
                log.info("webhook for %s delivered (attempt %d)", item.id, attempts)
                self._report("delivered")
                return True
            error = f"receiver answered HTTP {resp.status_code}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = redact(str(exc)) or type(exc).__name__
        if attempts >= self.max_attempts:
            await item.record(
                webhook_status="failed",
                webhook_attempts=attempts,
                webhook_next_at=None,
                webhook_last_error=error,
            )
            log.warning("webhook for %s failed for good after %d attempts: %s", item.id, attempts, error)
            self._report("failed")
        else:
            delay = self.backoff_s[min(attempts - 1, len(self.backoff_s) - 1)]
            await item.record(
                webhook_attempts=attempts,
                webhook_next_at=time.time() + delay,
                webhook_last_error=error,
            )
            log.info(
                "webhook for %s: attempt %d failed (%s); next in %.0f s", item.id, attempts, error, delay
            )
            self._report("retry")
        return False

    def _report(self, outcome: str) -> None:
        if self.on_result is not None:
            with contextlib.suppress(Exception):
                self.on_result(outcome)
