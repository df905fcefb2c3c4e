"""Why a job ended badly, as a `kind` a program can branch on and a message a person can act on.

The pool's own reasons (no capacity, spend cap, instance gone, rent failed) live in `app.pool.errors`,
below this room; `classify` reads their `kind` the same way."""

from __future__ import annotations

import asyncio
import re

from app.errors import ComfyfleetError
from app.redact import redact


class JobError(ComfyfleetError):
    kind = "job_error"


class JobCancelled(JobError):
    kind = "cancelled"


class JobTimeout(JobError):
    kind = "timeout"


class PromptLost(JobError):
    """After a restart, the instance's ComfyUI no longer has the job's prompt; the job runs again."""

    kind = "prompt_lost"
    retryable = True


class OutputMissing(JobError):
    kind = "output_missing"


class InputMissing(JobError):
    kind = "input_missing"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, redacted message) for any exception that ended a job."""
    if isinstance(exc, JobError):
        return exc.kind, redact(str(exc))
    if isinstance(exc, ComfyfleetError):
        kind = getattr(exc, "kind", None) or _snake(type(exc).__name__)
        return str(kind), redact(str(exc))
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout", "a step of the job took too long; try again, or raise JOB_TIMEOUT_S"
    text = redact(str(exc)) or type(exc).__name__
    return "internal", f"internal error ({type(exc).__name__}): {text}; this is a bug, please report it"
