"""Which store this deployment uses follows settings: R2 when configured, else the local directory."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.store.base import Store
from app.store.local import LocalStore
from app.store.r2 import R2Store


def local_store_root(settings: Settings) -> Path:
    return settings.data_dir / "results"


def make_store(settings: Settings) -> Store:
    """`R2Store` when `settings.effective_store_backend == "r2"`, else a `LocalStore` under data_dir
    whose URLs point at this server's `/files/` route (`effective_public_url`)."""
    if settings.effective_store_backend == "r2":
        return R2Store.from_settings(settings)
    return LocalStore(
        local_store_root(settings),
        settings.effective_public_url,
        follow_request_base=not settings.public_url,  # no PUBLIC_BASE_URL: the request's own base
    )
