"""Coalescing of identical in-flight jobs: at most one GPU run per cache key at a time.

The cache itself (keys, lookup, save) is the store room's `app.store.cache.ResultCache`; this is the part
that must sit inside the job runner, because a waiting job has its own row and state to keep.
"""

from __future__ import annotations

import asyncio


class Coalescer:
    def __init__(self) -> None:
        self._leaders: dict[str, asyncio.Future] = {}

    def claim(self, key: str) -> asyncio.Future | None:
        """None = you lead (run it, then `finish`); else a future resolving to True (the leader stored
        the result) or False (the leader failed: claim again and try yourself)."""
        fut = self._leaders.get(key)
        if fut is not None and not fut.done():
            return fut
        self._leaders[key] = asyncio.get_running_loop().create_future()
        return None

    def finish(self, key: str, ok: bool) -> None:
        fut = self._leaders.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(ok)

    async def aclaim(self, key: str) -> asyncio.Future | None:
        """`claim` as the runner calls it (a replica's coalescer also asks the database)."""
        return self.claim(key)

    async def afinish(self, key: str, ok: bool) -> None:
        self.finish(key, ok)

    def in_flight(self) -> int:
        return len(self._leaders)
