"""Readiness probes: does the instance's SSH (and optionally ComfyUI) actually answer?

Vast reports `running` before sshd accepts connections and before keys propagate, so the provider only
calls an instance usable once a probe says so. A probe takes the `Instance` (with `ssh` filled in) and
returns True/False; it never raises for "not yet".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from app.pool.provider import Instance

Probe = Callable[[Instance], Awaitable[bool]]


async def ssh_banner_probe(instance: Instance, timeout_s: float = 5.0) -> bool:
    """TCP connect to the SSH target and read the `SSH-2.0-...` banner within `timeout_s` seconds."""
    if instance.ssh is None:
        return False
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(instance.ssh.host, instance.ssh.port)
            line = await reader.readline()
        return line.startswith(b"SSH-2.0") or line.startswith(b"SSH-1.99")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
