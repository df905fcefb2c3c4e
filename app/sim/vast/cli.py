"""`comfyfleet sim vast`: serve the Vast.ai emulator standalone with a default market until stopped."""

from __future__ import annotations

import json
import secrets

import typer

from app.errors import ValidationError
from app.sim.serving import hold, run_until_stopped


def vast(
    port: int = typer.Option(8081, "--port", help="Port to listen on (0 = any free port)"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind"),
    api_key: str | None = typer.Option(None, "--api-key", help="Simulated API key (random if omitted)"),
    offers: int = typer.Option(200, "--offers", help="Number of offers in the default market"),
    seed: int = typer.Option(0, "--seed", help="Market seed (same seed, same offers)"),
    time_scale: float | None = typer.Option(
        None, "--time-scale", help="Boot time multiplier, 0 = instant (default: SIM_TIME_SCALE)"
    ),
    credit: float = typer.Option(100.0, "--credit", help="Simulated account credit in USD"),
    rate_limits: bool = typer.Option(False, "--rate-limits", help="Enforce Vast's per-endpoint rate limits"),
    as_json: bool = typer.Option(False, "--json", help="Print the URL and key as JSON"),
    max_seconds: float | None = typer.Option(None, "--max-seconds", hidden=True, help="Stop after N seconds"),
) -> None:
    """Serve the simulated Vast.ai API (a default market of offers) until Ctrl-C."""
    from app.config import get_settings
    from app.sim.vast import VastEmulator, default_market

    if offers < 0:
        raise ValidationError("offers", "must be >= 0")
    scale = get_settings().sim_time_scale if time_scale is None else time_scale
    if scale < 0:
        raise ValidationError("time_scale", "must be >= 0")
    key = api_key or f"sim-{secrets.token_hex(16)}"

    async def serve() -> None:
        emu = VastEmulator(
            default_market(offers, seed=seed),
            api_key=key,
            time_scale=scale,
            credit=credit,
            rate_limits=rate_limits,
        )
        url = await emu.start(host, port)
        if as_json:
            typer.echo(json.dumps({"url": url, "api_key": key, "offers": offers, "simulated": True}))
        else:
            typer.echo(f"Simulated Vast.ai API at {url}")
            typer.echo(f"API key (simulated): {key}")
            typer.echo(f"{offers} offers, time scale {scale:g}; faults: POST {url}/__sim/faults")
            typer.echo("Ctrl-C stops.")
        try:
            await hold(max_seconds)
        finally:
            await emu.stop()

    run_until_stopped(serve)


def register(sim: typer.Typer) -> None:
    sim.command("vast")(vast)
