"""One base URL for every URL the API gives out (`status_url`, `events_url`, `video_url`, story and batch
URLs): PUBLIC_BASE_URL when set, else the base URL the request came in on, so a client that called
`http://localhost:8000` gets `localhost` URLs everywhere, never a mix with the bind address.

The middleware puts the request's base where the local store reads it (`REQUEST_BASE_URL`), so result URLs
made while answering the request use the same base as `url_for` below.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings
from app.store.local import REQUEST_BASE_URL


def public_base(request: Request, settings: Settings) -> str:
    """PUBLIC_BASE_URL, or the base URL this request came in on (no trailing slash)."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def public_url_for(request: Request, settings: Settings, name: str, **params: Any) -> str:
    """`request.url_for(name, ...)` on the public base."""
    return public_base(request, settings) + str(request.app.url_path_for(name, **params))


class RequestBaseURL:
    """Pure ASGI middleware: sets `REQUEST_BASE_URL` for the request (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = REQUEST_BASE_URL.set(public_base(Request(scope), self.settings))
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_BASE_URL.reset(token)
