"""`comfyfleet sim ...` commands: the simulated world's stand-ins, served standalone."""

from __future__ import annotations

import typer

sim = typer.Typer(help="Simulated world: stand-ins for Vast.ai and ComfyUI.", no_args_is_help=True)


def register(cli: typer.Typer) -> None:
    """Add this room's commands to the root CLI."""
    from app.sim.comfyui.cli import register as register_comfy
    from app.sim.vast.cli import register as register_vast

    register_vast(sim)
    register_comfy(sim)
    cli.add_typer(sim, name="sim")
