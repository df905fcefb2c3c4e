"""WebSocket fan-out with ComfyUI's routing: `sid=None` broadcasts, otherwise only the socket whose
clientId equals sid gets the message (a newer socket with the same clientId replaces the older, and
loses its routing when the older one closes afterwards, as in ComfyUI's websocket_handler)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from app.sim.comfyui.faults import ComfyFaults

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
SEND_TIMEOUT_S = 10.0
PREVIEW_IMAGE_WITH_METADATA = 4


@dataclass
class Client:
    sid: str
    ws: web.WebSocketResponse
    request: web.Request
    feature_flags: dict[str, Any] = field(default_factory=dict)

    @property
    def wants_metadata(self) -> bool:
        return bool(self.feature_flags.get("supports_preview_metadata"))


class Hub:
    def __init__(self, faults: ComfyFaults) -> None:
        self.faults = faults
        self.clients: dict[str, Client] = {}

    def _targets(self, sid: str | None) -> list[Client]:
        if sid is None:
            return list(self.clients.values())
        client = self.clients.get(sid)
        return [client] if client is not None else []

    async def _send(self, client: Client, payload: str | bytes) -> None:
        if self.faults.silent_ws or client.ws.closed:
            return
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                if isinstance(payload, bytes):
                    await client.ws.send_bytes(payload)
                else:
                    await client.ws.send_str(payload)
        except (ConnectionError, RuntimeError) as exc:  # peer went away mid-send
            log.debug("ws send to %s failed: %s", client.sid, exc)
        except TimeoutError:  # a peer that stops reading must not stall execution: cut it off
            log.info("ws client %s stopped reading; dropping it", client.sid)
            if client.request.transport is not None:
                client.request.transport.abort()

    async def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        text = json.dumps({"type": event, "data": data})
        for client in self._targets(sid):
            await self._send(client, text)

    async def send_preview(
        self, png: bytes, meta: dict[str, Any], sid: str | None, before_progress: bool
    ) -> None:
        """Binary preview frames: type 4 (with metadata) to clients that announced
        supports_preview_metadata (sent before `progress`), legacy type 1 to the others (after it)."""
        for client in self._targets(sid):
            if client.wants_metadata and before_progress:
                blob = json.dumps(meta).encode()
                await self._send(
                    client, struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(blob)) + blob + png
                )
            elif not client.wants_metadata and not before_progress:
                await self._send(client, struct.pack(">II", PREVIEW_IMAGE, 2) + png)

    def drop(self, sid: str | None) -> None:
        """Cut the connection under the socket (no close frame), like a proxy or network dropping it."""
        for client in self._targets(sid):
            transport = client.request.transport
            if transport is not None:
                transport.abort()

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            transport = client.request.transport
            if transport is not None:
                transport.abort()
            with contextlib.suppress(Exception):
                await client.ws.close()
        self.clients.clear()
