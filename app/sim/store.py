"""Fault switches of the simulated world's result store: a thin wrapper around the product's own store.

The product stores results in its real store (the local directory, or R2): the simulated world does not
replace it, it only makes some puts go wrong first, the way R2 does now and then:

- `transient_puts`: the next N puts fail as a 503 / a connection reset does (`StoreUnavailable`, retryable);
- `permanent_puts`: the next N puts are refused the way a token without write permission is
  (`StoreAuthError`, not retryable);
- `slow_puts`: the next N puts hang `slow_s` seconds before storing (a stalled upload; the product's put
  timeout is what ends it).

Counters are consumed as puts arrive, across every process using the world: a `comfyfleet serve` attached
to a world in another process (`comfyfleet sim`, the chaos soak) takes each put's fault from that world
over HTTP (`POST /__sim/store/take` on the Vast emulator), so "the next 3 puts fail" means the next 3 of the
whole fleet, as with one real bucket. The store room never imports this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from app.store.base import StoreAuthError, StoredObject, StoreUnavailable

log = logging.getLogger(__name__)

# What one put meets: None (nothing wrong), or ("transient" | "permanent" | "slow", seconds for "slow").
Fault = tuple[str, float] | None
TakeFault = Callable[[str], Awaitable[Fault]]


@dataclass
class StoreFaults:
    """Switches; all off by default. Mutate fields at run time; each put consumes at most one."""

    transient_puts: int = 0  # next N puts fail like an R2 5xx / connection reset (retryable)
    permanent_puts: int = 0  # next N puts are refused (403 AccessDenied: not retryable)
    slow_puts: int = 0  # next N puts hang `slow_s` seconds before storing
    slow_s: float = 30.0
    key_contains: str | None = None  # only puts whose key contains this (e.g. ".mp4"); None = every put

    def take(self, key: str) -> Fault:
        """Consume the fault this put meets (permanent first, then transient, then slow)."""
        if self.key_contains and self.key_contains not in key:
            return None
        if self.permanent_puts > 0:
            self.permanent_puts -= 1
            return ("permanent", 0.0)
        if self.transient_puts > 0:
            self.transient_puts -= 1
            return ("transient", 0.0)
        if self.slow_puts > 0:
            self.slow_puts -= 1
            return ("slow", self.slow_s)
        return None

    def clear(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        """The HTTP face of the switches, mounted on the Vast emulator by `start_world`."""

        async def take(request: web.Request) -> web.Response:
            body = await request.json()
            fault = self.take(str(body.get("key", "")))
            return web.json_response({"fault": None if fault is None else list(fault)})

        async def get(_request: web.Request) -> web.Response:
            return web.json_response(asdict(self))

        async def post(request: web.Request) -> web.Response:
            body = await request.json()
            names = {f.name for f in fields(self)}
            for name, value in body.items():
                if name not in names:
                    return web.json_response({"error": f"unknown store fault {name!r}"}, status=400)
                setattr(self, name, value)
            return web.json_response(asdict(self))

        return [
            ("POST", "/__sim/store/take", take),
            ("GET", "/__sim/store/faults", get),
            ("POST", "/__sim/store/faults", post),
        ]


def local_faults(faults: StoreFaults) -> TakeFault:
    async def take(key: str) -> Fault:
        return faults.take(key)

    return take


class RemoteFaults:
    """Faults taken from a world in another process. A world that does not answer injects nothing (its
    process is gone or stopping): the store then behaves as it is."""

    def __init__(self, world_url: str, *, timeout_s: float = 2.0) -> None:
        self.url = world_url.rstrip("/") + "/__sim/store/take"
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def __call__(self, key: str) -> Fault:
        try:
            r = await self._client.post(self.url, json={"key": key})
            fault = r.json().get("fault") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return (str(fault[0]), float(fault[1])) if fault else None

    async def aclose(self) -> None:
        await self._client.aclose()


class FaultyStore:
    """The product's store with the world's store faults in front of its puts; everything else is the
    store's own (`__getattr__`)."""

    def __init__(self, inner: Any, take: TakeFault) -> None:
        self.inner = inner
        self._take = take
        if hasattr(inner, "put_bytes"):
            self.put_bytes = self._put_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r})"

    async def _meet(self, key: str) -> None:
        fault = await self._take(key)
        if fault is None:
            return
        kind, seconds = fault
        log.info("simulated store fault on put %s: %s", key, kind)
        if kind == "transient":
            raise StoreUnavailable(
                f"upload {key}: simulated store answered 503 (or reset the connection); retry later"
            )
        if kind == "permanent":
            raise StoreAuthError(
                f"simulated store refused the credentials on upload {key} (403 AccessDenied): check "
                "R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY and that the token has Object Read & Write"
            )
        if kind == "slow":
            await asyncio.sleep(seconds)

    async def put(self, path: Path, key: str, content_type: str, metadata: dict[str, str]) -> StoredObject:
        await self._meet(key)
        return await self.inner.put(path, key, content_type, metadata)

    async def _put_bytes(
        self, data: bytes, key: str, content_type: str, metadata: dict[str, str]
    ) -> StoredObject:
        await self._meet(key)
        return await self.inner.put_bytes(data, key, content_type, metadata)
