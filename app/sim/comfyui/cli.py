"""`comfyfleet sim comfy` / `python -m app.sim.comfyui`: serve the ComfyUI emulator standalone."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from app.errors import ValidationError
from app.sim.serving import hold, run_until_stopped


def load_object_info(path: Path | None) -> dict:
    """The node schemas to emulate: an explicit file, else the shipped ComfyUI 0.3.64 capture."""
    from app.sim.comfyui import DEFAULT_OBJECT_INFO

    candidate = path or DEFAULT_OBJECT_INFO
    if not candidate.is_file():
        raise ValidationError("object_info", f"{candidate} not found; pass --object-info FILE")
    try:
        data = json.loads(candidate.read_text())
    except ValueError as exc:
        raise ValidationError("object_info", f"{candidate} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValidationError("object_info", f"{candidate} must hold a JSON object")
    return data


def comfy(
    comfy_dir: Path = typer.Option(..., "--dir", help="ComfyUI dir (models/, custom_nodes/, input/)"),
    port: int = typer.Option(8188, "--port", help="Port to listen on (0 = any free port)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind"),
    object_info: Path | None = typer.Option(
        None, "--object-info", help="object_info JSON to emulate (default: the built-in one)"
    ),
    step_delay: float | None = typer.Option(
        None, "--step-delay", help="Seconds per sampler step (default: SIM_STEP_DELAY_S)"
    ),
    token: str | None = typer.Option(None, "--token", help="Require this bearer token (like a proxy)"),
    as_json: bool = typer.Option(False, "--json", help="Print the URL as JSON"),
    max_seconds: float | None = typer.Option(None, "--max-seconds", hidden=True, help="Stop after N seconds"),
) -> None:
    """Serve a simulated ComfyUI 0.3.64 over COMFY_DIR until Ctrl-C."""
    from app.config import get_settings
    from app.sim.comfyui import ComfyEmulator

    delay = get_settings().sim_step_delay_s if step_delay is None else step_delay
    if delay < 0:
        raise ValidationError("step_delay", "must be >= 0")
    info = load_object_info(object_info)

    async def serve() -> None:
        emu = ComfyEmulator(comfy_dir, object_info=info, step_delay_s=delay, token=token)
        url = await emu.start(host, port)
        nodes = sorted(emu.install.custom_nodes.values())
        if as_json:
            typer.echo(json.dumps({"url": url, "custom_nodes": nodes, "simulated": True}))
        else:
            typer.echo(f"Simulated ComfyUI at {url} (dir {emu.install.comfy_dir})")
            typer.echo(f"custom nodes: {', '.join(nodes) or 'none'}; step delay {delay:g}s")
            typer.echo(f"faults: POST {url}/__sim/faults; Ctrl-C stops.")
        try:
            await hold(max_seconds)
        finally:
            await emu.stop()

    run_until_stopped(serve)


def register(sim: typer.Typer) -> None:
    sim.command("comfy")(comfy)
