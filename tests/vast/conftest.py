"""Helpers for the vast room's tests: a VastClient over httpx.MockTransport with fast retries."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.vast.client import VastClient

API_KEY = "vk_test_0123456789abcdef"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


class Recorder:
    """Wraps a handler and keeps every request it saw."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


@pytest.fixture
async def make_client():
    clients: list[VastClient] = []

    def factory(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> tuple[VastClient, Recorder]:
        rec = Recorder(handler)
        opts = {"retry_deadline_s": 5.0, "backoff_initial_s": 0.001, "backoff_max_s": 0.01, "timeout": 2.0}
        opts.update(kw)
        client = VastClient("http://vast.test", API_KEY, transport=httpx.MockTransport(rec), **opts)
        clients.append(client)
        return client, rec

    yield factory
    for client in clients:
        await client.aclose()
