"""The small interfaces the job runner and the pool need from the other rooms.

They are deliberately narrower than the rooms' own APIs: the runner needs "run this graph under this
prompt id and tell me how far it got", not a whole ComfyUI client. `app.jobs.wiring` adapts the real
classes (ComfyClient, the provisioning functions, the store) to these shapes; tests use small fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
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


class ComfySession(Protocol):
    async def upload_image(self, path: Path) -> str: ...

    async def run(
        self,
        graph: dict,
        *,
        deadline: float,
        on_progress: ProgressFn,
        on_submitted: Callable[[str], None],
        progress_nodes: list[str],
        keep_on_cancel: Callable[[], bool] | None = None,
    ) -> Any:
        """Submit `graph`, call `on_submitted(prompt_id)` once ComfyUI accepted it, follow it to the end
        (cancelling the prompt if this call is cancelled, unless `keep_on_cancel()`: a shutdown);
        returns the outputs handle."""
        ...

    async def attach(self, prompt_id: str, *, deadline: float, on_progress: ProgressFn) -> Any | None:
        """Follow a prompt submitted earlier (restart recovery). None when this ComfyUI does not know it."""
        ...

    async def cancel(self, prompt_id: str) -> None: ...

    async def download_outputs(self, result: Any, dest_dir: Path) -> list[Path]: ...

    async def extract_last_frame(self, video_path: Path, png_path: Path) -> None: ...


ComfyConnector = Callable[[ComfyTarget], AbstractAsyncContextManager[ComfySession]]


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
