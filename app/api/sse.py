"""Server-Sent Events for anything that ends (a job, a story): one stream shape for every `/events` route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from fastapi.responses import StreamingResponse

from app.jobs.events import EventHub

KEEPALIVE_S = 15.0


class Ending(Protocol):
    @property
    def terminal(self) -> bool: ...


T = TypeVar("T", bound=Ending)


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def event_stream(
    hub: EventHub,
    key: str,
    load: Callable[[], Awaitable[T]],
    view: Callable[[T], Awaitable[dict[str, Any]]],
    keepalive_s: float = KEEPALIVE_S,
) -> StreamingResponse:
    """`snapshot` (the thing as it is now), then the hub's events for `key`, then one `end` with its final
    view. The hub is subscribed to before the snapshot is read, so no event between the two is lost; a
    quiet stream re-reads the thing every `keepalive_s`, so one that ended elsewhere (another replica, the
    cleanup) still gets its `end`, and a keep-alive comment holds proxies open meanwhile."""

    async def stream() -> AsyncIterator[str]:
        async with hub.subscribe(key) as q:
            thing = await load()
            yield sse("snapshot", await view(thing))
            while not thing.terminal:
                try:
                    ev = await asyncio.wait_for(q.get(), keepalive_s)
                except TimeoutError:
                    thing = await load()
                    if not thing.terminal:
                        yield ": keepalive\n\n"
                    continue
                if ev.get("event") == "end":
                    thing = await load()
                    break
                yield sse(ev.get("event", "progress"), ev)
            yield sse("end", await view(thing))

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
