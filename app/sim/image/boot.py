"""One simulated instance booting like Vast's ComfyUI image.

`boot()` is the container starting: the image's files exist (ComfyUI baked at the internal path, the
provisioning marker), SSH answers at once. `onstart` must start the services (ssh runtypes replace the
entrypoint): when it runs `entrypoint.sh`, the boot steps follow in the image's order: first-boot network
work (`SIM_WORKSPACE_SYNC_DELAY_S`, counted from SSH answering), the workspace sync (`36-sync-workspace.sh`:
copy ComfyUI into /workspace ONLY if the target does not exist yet), the marker removed, supervisor
launched (its `comfyui` program, see `supervisor`). An onstart without it starts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from typing import Any

from app.sim.image.layout import Layout
from app.sim.image.supervisor import ComfyProgram

log = logging.getLogger(__name__)


class SimImage:
    def __init__(
        self,
        layout: Layout,
        create_body: dict[str, Any],
        *,
        start_comfy: Callable[[], Awaitable[None]],
        sync_delay_s: float,
    ) -> None:
        self.layout = layout
        env = create_body.get("env") if isinstance(create_body.get("env"), dict) else {}
        self.env = {str(k): str(v) for k, v in env.items()}
        self.onstart = str(create_body.get("onstart") or "")
        self.sync_delay_s = max(0.0, sync_delay_s)
        self.program = ComfyProgram(layout, self.env, start_comfy)
        self.synced: bool | None = None  # None: not yet; False: skipped (target existed); True: copied
        self.done = asyncio.Event()  # the boot steps finished (marker gone)
        self._task: asyncio.Task[None] | None = None

    @property
    def starts_services(self) -> bool:
        return "entrypoint.sh" in self.onstart

    def start(self) -> None:
        """Run `onstart` (call once SSH answers)."""
        if self.starts_services and self._task is None:
            self._task = asyncio.create_task(self._boot())

    async def _boot(self) -> None:
        await asyncio.sleep(self.sync_delay_s)  # first-boot steps: git pull, portal update check
        await asyncio.to_thread(self._sync_workspace)
        with contextlib.suppress(FileNotFoundError):
            self.layout.marker.unlink()
        self.done.set()
        await self.program.run()

    def _sync_workspace(self) -> None:
        target = self.layout.comfy_dir
        if target.exists():
            self.synced = False
            self.layout.log(f"{target} already exists, skipping workspace sync")
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.layout.internal_comfy, target, symlinks=True)
        self.synced = True

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
