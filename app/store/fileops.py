"""Small blocking file operations (stat, mkdir, temp files, unlinks) of many jobs in one thread hop.

The event loop must not block on the filesystem, but on a small machine a thread hop per operation costs
more than the operation: ~0.1 ms of CPU plus a GIL hand-off each way, and with 32 jobs in flight the
hand-offs (futex storms between the loop and a dozen woken threads) were most of the control plane's CPU.
Operations queued in the same loop tick go to the default executor as one work item, which runs them in
order and resolves every caller with a single wake-up of the loop. Only for quick operations: anything
that streams (uploads, copies of videos) keeps its own thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Item = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future]


class FileOps:
    """One per event loop user (a runner, a cache): `await ops.run(fn, *args)`."""

    def __init__(self) -> None:
        self._pending: list[_Item] = []
        self._scheduled = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._pending.append((fn, args, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._submit, loop)
        return await fut

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending, self._scheduled = self._pending, [], False
        try:
            loop.run_in_executor(None, _run_batch, loop, batch)
        except RuntimeError as exc:  # executor shut down (the loop is closing): nobody may hang
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)


def _run_batch(loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
    results: list[tuple[asyncio.Future, Any, BaseException | None]] = []
    for fn, args, fut in batch:
        try:
            results.append((fut, fn(*args), None))
        except BaseException as exc:  # delivered to its caller, never lost in the thread
            results.append((fut, None, exc))
    loop.call_soon_threadsafe(_resolve, results)


def _resolve(results: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    for fut, value, exc in results:
        if fut.done():  # the caller was cancelled meanwhile
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
