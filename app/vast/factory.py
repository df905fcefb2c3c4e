"""Build the Vast.ai client, ledger and provider from settings (CLI, pool wiring, benchmarks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from app.config import Settings
from app.db import init_db, make_engine, make_sessionmaker
from app.errors import ConfigError
from app.pool.ledger import InstanceLedger
from app.vast.client import VastClient
from app.vast.provider import VastProvider

NO_KEY_MESSAGE = (
    "no Vast.ai API key configured: set VAST_API_KEY (and VAST_API_URL for an emulator, e.g. one "
    "started with `comfyfleet sim vast --port 8081`)"
)


def client_from_settings(
    settings: Settings,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> VastClient:
    """A `VastClient` for `settings.vast_api_url` (or `base_url`, e.g. the simulated world's emulator).

    Raises `ConfigError` when no key is configured or given."""
    key = api_key or (settings.vast_api_key.get_secret_value() if settings.vast_api_key else "")
    if not key:
        raise ConfigError(NO_KEY_MESSAGE)
    return VastClient(
        base_url or settings.vast_api_url, key, timeout=settings.vast_request_timeout_s, transport=transport
    )


@asynccontextmanager
async def open_provider(
    settings: Settings,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **provider_kwargs: Any,
) -> AsyncIterator[VastProvider]:
    """`async with open_provider(settings) as provider:` -- client, ledger (tables created), provider.

    `provider_kwargs` go to `VastProvider` (e.g. `ssh_probe=`, `comfy_probe=`). In the simulated world
    (no key, provider sim) the admin commands act on the world a `comfyfleet sim` is running."""
    if settings.simulated and base_url is None and api_key is None and settings.vast_api_key is None:
        settings = await _running_world_settings(settings)
    client = client_from_settings(settings, base_url=base_url, api_key=api_key, transport=transport)
    engine = make_engine(settings.effective_database_url)
    try:
        await init_db(engine)
        ledger = InstanceLedger(make_sessionmaker(engine))
        yield VastProvider(client, ledger, settings, **provider_kwargs)
    finally:
        await client.aclose()
        await engine.dispose()


async def _running_world_settings(settings: Settings) -> Settings:
    from app.sim.world import attach_world  # only the simulated world's wiring imports app.sim

    world = await attach_world(settings)
    if world is None:
        raise ConfigError(
            f"simulated world: none is running for DATA_DIR={settings.data_dir} (start one with "
            "`comfyfleet sim`), and no VAST_API_KEY is configured for the real Vast.ai"
        )
    return world.settings
