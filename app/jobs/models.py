"""The durable job record and its state machine.

A job's row is the single source of truth for where the job is: every transition is committed before the
work it starts, so after a crash the row says exactly what may be half-done (an instance being rented, a
prompt on a ComfyUI, an upload). The allowed-transition table is explicit so an impossible move (a cancelled
job "succeeding" because a late task finished) is an error instead of silent corruption.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.errors import ComfyfleetError


class JobState(StrEnum):
    QUEUED = "queued"
    ACQUIRING = "acquiring"  # waiting for / leasing an instance slot
    PROVISIONING = "provisioning"  # instance being rented, booted or made ready for the workflow
    RUNNING = "running"  # prompt submitted to ComfyUI (queued ahead or executing)
    UPLOADING = "uploading"  # outputs being downloaded and stored
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset(set(JobState) - TERMINAL_STATES)
WAITING_STATES = frozenset({JobState.QUEUED, JobState.ACQUIRING})
GPU_STATES = frozenset({JobState.PROVISIONING, JobState.RUNNING, JobState.UPLOADING})

# from -> allowed next states. failed/cancelled are reachable from every non-terminal state.
# X -> queued exists only for restart recovery (re-queue once).
_FORWARD: dict[JobState, set[JobState]] = {
    JobState.QUEUED: {JobState.ACQUIRING, JobState.SUCCEEDED},  # succeeded = cache hit
    JobState.ACQUIRING: {JobState.PROVISIONING, JobState.RUNNING, JobState.QUEUED},
    JobState.PROVISIONING: {JobState.RUNNING, JobState.QUEUED},
    JobState.RUNNING: {JobState.UPLOADING, JobState.QUEUED},
    JobState.UPLOADING: {JobState.SUCCEEDED, JobState.QUEUED},
}
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    **{s: frozenset(nxt | {JobState.FAILED, JobState.CANCELLED}) for s, nxt in _FORWARD.items()},
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class IllegalTransition(ComfyfleetError):
    """A job was asked to move somewhere its state machine does not allow (usually: it already ended)."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"job {job_id}: cannot go from {current} to {target}")
        self.job_id, self.current, self.target = job_id, current, target


def check_transition(job_id: str, current: str, target: str) -> None:
    if JobState(target) not in ALLOWED_TRANSITIONS[JobState(current)]:
        raise IllegalTransition(job_id, current, target)


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:20]


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_job_id)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value, index=True)
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)  # finer than state: "sampling"
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    # The validated request: workflow, params, image sha256 + stored input path. Never secrets.
    workflow: Mapped[str] = mapped_column(String(128))
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cache_key: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(64), nullable=True)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)  # stage -> seconds
    stage_started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    instance_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    comfy_prompt_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times the job was (re)started
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending|delivered|failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_next_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    webhook_last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The name of the API token that submitted the job (never the token); None for local CLI runs.
    submitted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Replicas (app.jobs.claims): which `comfyfleet serve` runs the job, and until when its lease holds
    # (renewed by that replica's heartbeat; another replica re-claims the job once it lapses).
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claim_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time, onupdate=time.time)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index("ix_jobs_state_created", "state", "created_at"),
        Index("ix_jobs_submitted_by_created", "submitted_by", "created_at"),  # a token's spend today
        Index("ix_jobs_claimed_by", "claimed_by"),  # a replica's heartbeat renews its own claims
    )

    @property
    def terminal(self) -> bool:
        return JobState(self.state) in TERMINAL_STATES

    def to_public(self, queue_position: int | None = None) -> dict[str, Any]:
        """The shape `GET /jobs/{id}` answers with (no input path, no internal fields)."""
        req = self.request or {}
        out: dict[str, Any] = {
            "job_id": self.id,
            "state": self.state,
            "stage": self.stage,
            "progress": round(self.progress or 0.0, 4),
            "queue_position": queue_position,
            "workflow": self.workflow,
            "params": req.get("params"),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "submitted_by": self.submitted_by,
            "result": self.result,
            "error": (
                {"message": self.error_message, "kind": self.error_kind} if self.error_message else None
            ),
            "timings": self.timings or {},
            "cost_usd": self.cost_usd,
            "webhook": (
                {"status": self.webhook_status, "attempts": self.webhook_attempts}
                if self.webhook_url
                else None
            ),
        }
        return out


class CleanupAction(Base):
    """One thing the reaper did (or would have done with --dry-run), and why."""

    __tablename__ = "cleanup_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    kind: Mapped[str] = mapped_column(
        String(32)
    )  # idle_instance|stuck_instance|orphan_instance|stuck_job|...
    target: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
