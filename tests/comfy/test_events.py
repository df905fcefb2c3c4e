"""The shared event socket: routing by prompt_id, and events that arrive before their job registers."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from app.comfy.events import EventSocket


class _Job:
    def __init__(self, prompt_id):
        self.prompt_id = prompt_id
        self.wake = asyncio.Event()
        self.seen = []


async def test_events_before_registration_are_replayed_to_the_job():
    """A server that ignores our proposed prompt_id sends events for an id we learn only later."""

    async def handler(ws):
        for msg in (
            {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}},
            {"type": "execution_start", "data": {"prompt_id": "server-id", "timestamp": 1}},
            {"type": "executing", "data": {"node": "3", "prompt_id": "other-id"}},
            {"type": "execution_success", "data": {"prompt_id": "server-id", "timestamp": 2}},
        ):
            await ws.send(json.dumps(msg))
        await ws.wait_closed()

    async def handle(job, msg_type, data):
        job.seen.append(msg_type)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]

        async def opener(client_id, deadline):
            return await connect(f"ws://127.0.0.1:{port}/ws?clientId={client_id}")

        events = EventSocket("c1", opener, handle)
        await events.ensure(None)
        await asyncio.sleep(0.1)
        job = _Job("server-id")
        await events.register(job)
        assert job.seen == ["execution_start", "execution_success"]
        await events.aclose()
        assert not events.alive
