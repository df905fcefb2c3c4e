"""The small interfaces the pool needs from the rooms around it.

The pool hands a job an instance and makes that instance ready through `InstancePreparer`; it keeps its
instances in a `Ledger`. `app.jobs.wiring` plugs the real provisioning and the real ledger in; tests use
small fakes. They live here, in the pool's room, because the pool is below the job room that also uses
them (`app.jobs.ports` adds the ComfyUI session the runner drives).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.pool.provider import Instance


@dataclass
class Progress:
    """One progress report. `stage` is what the user sees ("provisioning", "sampling", "encoding"...);
    `fraction` is that stage's own 0..1 (None when unknown); `detail` carries bytes or steps for bars."""

    stage: str
    fraction: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[Progress], None]


@dataclass
class ComfyTarget:
    """How to reach one prepared instance's ComfyUI (a tunnel's local URL, or a direct URL)."""

    url: str
    token: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)


class InstancePreparer(Protocol):
    """Makes an instance able to run a workflow: SSH, provisioning, tunnel, ComfyUI readiness + capabilities.
    Idempotent: a second call for an already prepared instance is cheap."""

    async def prepare(self, instance: Instance, workflow: Any, on_progress: ProgressFn) -> ComfyTarget: ...

    async def release(self, instance: Instance) -> None:
        """Close whatever `prepare` holds open for the instance (SSH connection, tunnel)."""
        ...


class Ledger(Protocol):
    """The part of `app.pool.ledger.InstanceLedger` the pool and the cleanup use."""

    async def get(self, id: str) -> Instance | None: ...

    async def update(self, instance: Instance) -> None: ...

    async def list(self, alive_only: bool = True) -> list[Instance]: ...

    async def mark_destroyed(self, id: str) -> None: ...
