"""One ComfyUI WebSocket per client, shared by all its prompts, with events routed by prompt_id.

ComfyUI sends a prompt's events only to the socket whose clientId equals the prompt's client_id, so the
socket must be open before POST /prompt. Keeping one socket open (instead of one per job) takes the
handshake out of every job's latency; ComfyUI tags every execution event with its prompt_id, which is
how events find their job. Events for a prompt id nobody registered yet (the server ignored the
prompt_id we proposed) are kept briefly and replayed when the job registers under the real id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)


class _JobLike(Protocol):
    prompt_id: str
    wake: asyncio.Event


Handler = Callable[[Any, str, dict[str, Any]], Awaitable[None]]
Opener = Callable[[str, float | None], Awaitable[ClientConnection]]


class EventSocket:
    def __init__(self, client_id: str, opener: Opener, handler: Handler) -> None:
        self.client_id = client_id
        self._open = opener
        self._handle = handler
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._jobs: dict[str, Any] = {}
        self._orphans: deque[tuple[str, str, dict[str, Any]]] = deque(maxlen=2000)
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def alive(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def ensure(self, deadline: float | None) -> None:
        """Open (or reopen, same clientId) the socket unless it is up. Raises what the opener raises."""
        if self.alive:
            return
        async with self._lock:
            if self.alive:
                return
            old, self._ws = self._ws, None
            if old is not None:
                # Closed BEFORE the new one opens: ComfyUI unroutes a clientId whenever one of its
                # sockets ends, so an old socket ending after the new handshake would make the new deaf.
                await close_ws(old)
            ws = await self._open(self.client_id, deadline)
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws))

    async def reopen(self, deadline: float | None) -> None:
        """Replace a socket that is up but no longer routed to us (same clientId)."""
        async with self._lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
        await self.ensure(deadline)

    async def register(self, job: _JobLike) -> None:
        self._jobs[job.prompt_id] = job
        replay = [o for o in self._orphans if o[0] == job.prompt_id]
        for item in replay:
            self._orphans.remove(item)
        for _, msg_type, data in replay:
            await self._handle(job, msg_type, data)

    def unregister(self, prompt_id: str) -> None:
        self._jobs.pop(prompt_id, None)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue  # preview images
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(msg, dict) or not isinstance(msg.get("data"), dict):
                    continue
                data = msg["data"]
                prompt_id = data.get("prompt_id")
                if not isinstance(prompt_id, str):
                    continue  # status broadcasts, feature flags, monitoring extensions
                job = self._jobs.get(prompt_id)
                if job is None:
                    self._orphans.append((prompt_id, str(msg.get("type")), data))
                    continue
                await self._handle(job, str(msg.get("type")), data)
        except ConnectionClosed:
            pass
        finally:
            for job in list(self._jobs.values()):
                job.wake.set()

    def _close_later(self, ws: ClientConnection) -> None:
        task = asyncio.create_task(close_ws(ws))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._ws is not None:
            self._close_later(self._ws)
            self._ws = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def close_ws(ws: ClientConnection) -> None:
    """Close, reading whatever is still queued: with no reader, a full frame queue would stop the
    connection from ever seeing the server's close frame (a 2 s close_timeout)."""

    async def drain() -> None:
        with contextlib.suppress(Exception):
            async for _ in ws:
                pass

    drainer = asyncio.create_task(drain())
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), timeout=2.0)
    drainer.cancel()
    with contextlib.suppress(BaseException):
        await drainer
