"""`comfyfleet sim ...` commands: the simulated world, or one of its stand-ins, served standalone."""

from __future__ import annotations

import json

import typer

from app.sim.serving import hold, run_until_stopped

sim = typer.Typer(
    help="Simulated world: the Vast.ai emulator, simulated instances (SSH + ComfyUI emulator), the model "
    "server. With no subcommand: start the whole world and print its endpoints.",
    invoke_without_command=True,
)


@sim.callback()
def world(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the endpoints as JSON."),
    keep: bool = typer.Option(
        False, "--keep", help="Keep data/sim/world-<pid> when the world stops (default SIM_KEEP_WORLD)."
    ),
    max_seconds: float | None = typer.Option(None, "--max-seconds", hidden=True, help="Stop after N seconds"),
) -> None:
    """Start the simulated world alone (until Ctrl-C); `serve` and `generate` then attach to it."""
    if ctx.invoked_subcommand is not None:
        return
    from app.config import get_settings
    from app.sim.world import publish, start_world

    async def run() -> None:
        settings = get_settings()
        if keep:
            settings = settings.model_copy(update={"sim_keep_world": True})
        w = await start_world(settings, attach=False)
        try:
            marker = publish(w)
            if as_json:
                typer.echo(json.dumps({**w.endpoints, "world_file": str(marker)}))
            else:
                typer.secho("SIMULATED WORLD (no real GPUs, no real Vast.ai account)", bold=True, fg="yellow")
                for name, value in w.describe():
                    typer.echo(f"  {name:24s} {value}")
                typer.echo(f"  {'endpoints file':24s} {marker}")
                typer.echo("`comfyfleet serve` / `comfyfleet generate` with the same DATA_DIR attach to it.")
            await hold(max_seconds)
        finally:
            await w.stop()

    run_until_stopped(run)


def register(cli: typer.Typer) -> None:
    """Add this room's commands to the root CLI."""
    from app.sim.comfyui.cli import register as register_comfy
    from app.sim.vast.cli import register as register_vast

    register_vast(sim)
    register_comfy(sim)
    cli.add_typer(sim, name="sim")
