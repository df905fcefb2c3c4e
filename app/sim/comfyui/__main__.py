"""`python -m app.sim.comfyui --dir D --port P`: the same as `comfyfleet sim comfy`."""

from __future__ import annotations

import typer

from app.sim.comfyui.cli import comfy

if __name__ == "__main__":
    typer.run(comfy)
