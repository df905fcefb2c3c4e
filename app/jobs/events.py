"""In-process fan-out of job snapshots to SSE streams, `wait` requests and the CLI's progress bars.

Subscribers get bounded queues and only the latest snapshot matters, so a slow reader drops old progress
instead of slowing the runner or growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any


class EventHub:
    def __init__(self, queue_size: int = 64) -> None:
        self._subs: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self._queue_size = queue_size
        self._end_waiters: dict[str, set[asyncio.Future]] = {}

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        subs = self._subs.get(job_id)
        if subs:
            for q in list(subs):
                if q.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        q.get_nowait()
                q.put_nowait(event)
        if event.get("event") == "end":
            for fut in self._end_waiters.pop(job_id, ()):
                if not fut.done():
                    fut.set_result(event)

    def wants(self, job_id: str) -> bool:
        """Whether anyone streams this job's progress (publishers skip building events otherwise)."""
        return bool(self._subs.get(job_id))

    @contextlib.contextmanager
    def ended(self, job_id: str) -> Iterator[asyncio.Future]:
        """A future resolved with the job's "end" event: waiting for the end costs one wake-up instead of
        one per progress event."""
        fut = asyncio.get_running_loop().create_future()
        waiters = self._end_waiters.setdefault(job_id, set())
        waiters.add(fut)
        try:
            yield fut
        finally:
            waiters.discard(fut)
            if not waiters and self._end_waiters.get(job_id) is waiters:
                self._end_waiters.pop(job_id, None)

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

    def watched(self) -> set[str]:
        """Jobs someone streams or waits for (a replica polls those that run elsewhere)."""
        return set(self._subs) | set(self._end_waiters)

    def subscribers(self, job_id: str) -> int:
        return len(self._subs.get(job_id, ()))
