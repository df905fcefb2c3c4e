"""Response helpers in the shapes the real API uses (reference vastai.md §5)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# Where handlers find their emulator (typed as Any to avoid an import cycle with server.py).
EMU: web.AppKey[Any] = web.AppKey("vast_emulator")


def error(status: int, code: str | None, msg: str, **extra: Any) -> web.Response:
    """`{"success": false, "error": code, "msg": msg, ...}` with the given HTTP status."""
    body: dict[str, Any] = {"success": False}
    if code is not None:
        body["error"] = code
    body["msg"] = msg
    body.update(extra)
    return web.json_response(body, status=status)


def too_frequent(threshold: float, retry_after: float | None = None, style: str = "text") -> web.Response:
    """The 429 Vast answers when calls come faster than the endpoint's threshold.

    Real bodies vary by endpoint: plain text (most), `{"detail": ...}` (create, manage) or the
    `success/error/msg` form (destroy); `style` picks one ("text", "detail", "json")."""
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    text = f"API requests too frequent endpoint threshold={threshold:g}"
    if style == "detail":
        return web.json_response({"detail": text}, status=429, headers=headers)
    if style == "json":
        body = {"success": False, "error": "rate_limit_exceeded", "msg": text}
        return web.json_response(body, status=429, headers=headers)
    return web.Response(status=429, text=text, content_type="text/plain", headers=headers)


async def json_body(request: web.Request) -> Any:
    """The request's JSON body; an empty body is `{}`. Raises ValueError on malformed JSON."""
    raw = await request.read()
    if not raw.strip():
        return {}
    return json.loads(raw)


def json_param(request: web.Request, name: str, default: Any) -> Any:
    """A JSON-encoded query parameter (`select_filters=%7B%7D`). Raises ValueError if malformed."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return json.loads(raw)


def int_id(raw: str) -> int | None:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None
