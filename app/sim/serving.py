"""How the standalone `comfyfleet sim ...` servers stay up: until Ctrl-C, or `--max-seconds` in tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


async def hold(max_seconds: float | None) -> None:
    """Wait until cancelled (Ctrl-C), or for `max_seconds` when given."""
    if max_seconds is None:
        await asyncio.Event().wait()
    else:
        await asyncio.sleep(max_seconds)


def run_until_stopped(serve: Callable[[], Awaitable[None]]) -> None:
    """Run a server coroutine; Ctrl-C is the normal way out, not an error."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())  # type: ignore[arg-type]
