"""Where Vast's ComfyUI image keeps things, mapped into a simulated instance's sandbox.

The sandbox stands for the container's `/` (and is the SSH user's home, so `~/x` on the simulated host is
`/x` on the real one). Paths from the image's sources: ComfyUI baked at `/opt/workspace-internal/ComfyUI`
and copied to `${WORKSPACE}/ComfyUI` (`36-sync-workspace.sh`), `WORKSPACE=/workspace`; ComfyUI runs in
`/venv/main` (`comfyui.sh`); the provisioning marker `/.provisioning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# What the product must be told about a simulated instance (its settings, relative to the SSH home).
SIM_COMFY_DIR = "~/workspace/ComfyUI"
SIM_COMFY_PYTHON = "~/venv/main/bin/python"
SIM_BOOT_MARKER = "~/.provisioning"
SIM_COMFY_LOG = "~/var/log/portal/comfyui.log"

_BAKED_FOLDERS = ("models", "custom_nodes", "input", "output", "user")
MAIN_PY = (
    '''"""ComfyUI entry point (simulated image: the ComfyUI emulator stands in for this process)."""\n'''
)


@dataclass(frozen=True)
class Layout:
    root: Path  # the container's "/"

    @property
    def internal_comfy(self) -> Path:
        return self.root / "opt" / "workspace-internal" / "ComfyUI"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def comfy_dir(self) -> Path:
        return self.workspace / "ComfyUI"

    @property
    def venv(self) -> Path:
        return self.root / "venv" / "main"

    @property
    def marker(self) -> Path:
        return self.root / ".provisioning"

    @property
    def comfy_log(self) -> Path:
        return self.root / "var" / "log" / "portal" / "comfyui.log"

    def bake(self, restart_hook: str | None = None) -> None:
        """The image's own files: ComfyUI at the internal path (a restart hook baked beside it when given,
        standing for `supervisorctl restart comfyui`), and the marker of a boot not done yet."""
        base = self.internal_comfy
        for folder in _BAKED_FOLDERS:
            (base / folder).mkdir(parents=True, exist_ok=True)
        (base / "main.py").write_text(MAIN_PY)
        if restart_hook:
            hook = base / ".comfyfleet" / "restart"
            hook.parent.mkdir(parents=True, exist_ok=True)
            hook.write_text(f"#!/bin/sh\n{restart_hook}\n")
            hook.chmod(0o755)
        self.comfy_log.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text("")

    def log(self, line: str) -> None:
        with self.comfy_log.open("a") as f:
            f.write(line.rstrip("\n") + "\n")
