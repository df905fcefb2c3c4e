"""Supervisor's `comfyui` program in the simulated image (`supervisor/conf.d/comfyui.conf`, `comfyui.sh`).

Every start runs the checks `comfyui.sh` runs, in its order, and exits when one fails; supervisor
(autorestart=true) starts it again a moment later, for ever:
1. `utils/exit_portal.sh`: the portal config (built from PORTAL_CONFIG; the image sets no default) must
   name ComfyUI, else "Skipping ComfyUI startup" and exit;
2. `cd ${WORKSPACE}/ComfyUI && python main.py`: main.py must exist (a workspace copy that was skipped
   leaves none);
3. ComfyUI's torch must have CUDA (a custom node that replaced it with a CPU build breaks it).
Then ComfyUI runs (the emulator listens on the port fixed at boot).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.sim.image.layout import Layout
from app.sim.image.venv import installed_version, torch_has_cuda

log = logging.getLogger(__name__)

RESTART_DELAY_S = 0.5  # supervisord's back-off between exits and restarts (seconds, simulated)


def portal_names_comfyui(portal_config: str | None) -> bool:
    """`exit_portal.sh "ComfyUI"`: `grep -qiE '^[^#].*ComfyUI' /etc/portal.yaml`, the portal config built
    from PORTAL_CONFIG (entries `host:ext_port:int_port:path:name` joined by `|`): any entry mentioning
    ComfyUI, case-insensitively."""
    return any("comfyui" in entry.lower() for entry in (portal_config or "").split("|") if entry.strip())


class ComfyProgram:
    """`supervisorctl start comfyui` semantics: run, exit on a failed check, restart after a pause."""

    def __init__(self, layout: Layout, env: dict[str, str], start: Callable[[], Awaitable[None]]) -> None:
        self.layout = layout
        self.env = env
        self._start = start
        self.starts = 0  # how many times supervisor started the program
        self.skips = 0  # how many of those skipped (no ComfyUI in PORTAL_CONFIG)
        self.running = False
        self.last_exit: str | None = None

    def check(self) -> str | None:
        """Why this start exits at once (None: ComfyUI runs)."""
        if not portal_names_comfyui(self.env.get("PORTAL_CONFIG")):
            return "Skipping ComfyUI startup (not in PORTAL_CONFIG)"
        if not (self.layout.comfy_dir / "main.py").is_file():
            main = self.layout.comfy_dir / "main.py"
            return f"python: can't open file '{main}': [Errno 2] No such file or directory"
        if not torch_has_cuda(self.layout.venv):
            version = installed_version(self.layout.venv, "torch")
            return f"AssertionError: Torch not compiled with CUDA enabled (torch {version})"
        return None

    async def run(self) -> None:
        """Supervisor's loop for the program; returns once ComfyUI runs (cancel it to stop retrying)."""
        while True:
            self.starts += 1
            reason = self.check()
            if reason is None:
                self.layout.log("Starting ComfyUI...")
                await self._start()
                self.running = True
                self.layout.log("To see the GUI go to: http://127.0.0.1:18188")
                return
            if reason.startswith("Skipping"):
                self.skips += 1
            self.last_exit = reason
            self.layout.log(reason)
            await asyncio.sleep(RESTART_DELAY_S)
