"""The small interface the job runner needs from ComfyUI (the pool's own ports are in `app.pool.ports`).

They are deliberately narrower than the rooms' own APIs: the runner needs "run this graph under this
prompt id and tell me how far it got", not a whole ComfyUI client. `app.jobs.wiring` adapts the real
classes (ComfyClient, the provisioning functions, the store) to these shapes; tests use small fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from app.pool.ports import ComfyTarget, ProgressFn


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
