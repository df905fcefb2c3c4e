"""In-process fan-out of job snapshots to SSE streams, `wait` requests and the CLI's progress bars.

Subscribers get bounded queues and only the latest snapshot matters, so a slow reader drops old progress
instead of slowing the runner or growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any


class EventHub:
    def __init__(self, queue_size: int = 64) -> None:
        self._subs: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._queue_size = queue_size

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        for q in list(self._subs.get(job_id, ())):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Queue]:
        q: asyncio.Queue = asyncio.Queue(self._queue_size)
        self._subs[job_id].add(q)
        try:
            yield q
        finally:
            subs = self._subs.get(job_id)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    self._subs.pop(job_id, None)

    def subscribers(self, job_id: str) -> int:
        return len(self._subs.get(job_id, ()))
