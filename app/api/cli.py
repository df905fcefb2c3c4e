"""`comfyfleet serve`: the HTTP API with the pool, the runner and the cleanup loop behind it."""

from __future__ import annotations

import asyncio
from typing import Any

import typer

from app.config import Settings, get_settings
from app.jobs.cli import banner


def register(cli: typer.Typer) -> None:
    cli.command("serve")(serve)


def serve(
    host: str | None = typer.Option(None, "--host", help="Listen address (default HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Listen port (default PORT, 8000)."),
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs) with the pool, the runner and the cleanup loop."""
    import uvicorn

    from app.api.app import create_app
    from app.api.auth import check_listen_policy
    from app.jobs.wiring import build_services, describe
    from app.redact import setup_logging

    settings = _with_overrides(get_settings(), host=host, port=port)
    check_listen_policy(settings, settings.host)  # before anything starts: no token, no open real provider
    setup_logging(settings.log_level)
    banner(settings, f"serving on http://{settings.host}:{settings.port} (docs at /docs)")

    async def main() -> None:
        services = await build_services(settings)
        typer.echo(describe(services.settings))
        config = uvicorn.Config(
            create_app(services),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            lifespan="on",
        )
        await uvicorn.Server(config).serve()

    asyncio.run(main())


def _with_overrides(settings: Settings, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=values) if values else settings
