"""A typed Python client for a comfyfleet server: `AsyncComfyfleet` (asyncio) and `Comfyfleet` (blocking).

Both speak the HTTP API and answer with its own response models; see `app.client.aio` for the behaviour
(retries on reads only, SSE progress with reconnects, streamed downloads)."""

from app.client.aio import AsyncComfyfleet, image_fields
from app.client.errors import (
    ApiError,
    ClientError,
    Conflict,
    InvalidRequest,
    NotFound,
    ServerUnreachable,
    Unauthorized,
)
from app.client.sync import Comfyfleet

__all__ = [
    "ApiError",
    "AsyncComfyfleet",
    "ClientError",
    "Comfyfleet",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "ServerUnreachable",
    "Unauthorized",
    "image_fields",
]
