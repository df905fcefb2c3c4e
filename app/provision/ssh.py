"""SSH to instances: host-key pinning and local port forwards.

Trust on first use, then pin: with no pinned key the host's key is accepted and handed to
`on_new_host_key` so the caller records it in the instance record; with a pinned key only that exact key is
accepted, and anything else is `HostKeyMismatch` (a replaced host or a man in the middle), never a
silent re-pin.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh

from app.errors import ConfigError
from app.pool.provider import SSHTarget
from app.provision.errors import HostKeyMismatch, SSHAuthFailed, SSHUnavailable

HostKeyCallback = Callable[[str], Awaitable[None] | None]


def host_key_line(key: asyncssh.SSHKey) -> str:
    """`"ssh-ed25519 AAAA..."` (OpenSSH public key line, no comment)."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def parse_target(text: str, *, host_key: str | None = None) -> SSHTarget:
    """`root@host:port` / `host:port` / `host` -> SSHTarget."""
    user, _, rest = text.rpartition("@")
    host, port = rest, 22
    if rest.startswith("["):  # [ipv6]:port
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, _, p = rest.partition(":")
        port = int(p)
    return SSHTarget(host=host, port=port, user=user or "root", host_key=host_key)


async def connect(
    target: SSHTarget,
    key_path: str | Path,
    *,
    on_new_host_key: HostKeyCallback | None = None,
    connect_timeout_s: float = 20.0,
    keepalive_s: float = 15.0,
) -> asyncssh.SSHClientConnection:
    """Open an SSH connection to `target` with its key pinned (see module docstring)."""
    try:
        client_key = asyncssh.read_private_key(str(key_path))
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"cannot read the SSH private key {key_path}: {exc}") from exc
    if target.host_key:
        try:
            pinned = asyncssh.import_public_key(target.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise HostKeyMismatch(f"the pinned host key for {target} cannot be parsed: {exc}") from exc
        known_hosts: object = ([pinned], [], [])
    else:
        known_hosts = None
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                target.host,
                target.port,
                username=target.user,
                client_keys=[client_key],
                known_hosts=known_hosts,  # type: ignore[arg-type]
                agent_path=None,
                config=[],
                connect_timeout=connect_timeout_s,
                keepalive_interval=keepalive_s,
                keepalive_count_max=4,
            ),
            timeout=connect_timeout_s + 5,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyMismatch(
            f"{target} presented a host key different from the pinned one; refusing to connect "
            "(the host was replaced or someone is in between). Re-pin only if you know why it changed."
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise SSHAuthFailed(f"{target} refused the SSH key {key_path}") from exc
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise SSHUnavailable(f"cannot reach SSH at {target}: {exc.__class__.__name__}: {exc}") from exc

    if not target.host_key:
        server_key = conn.get_server_host_key()
        if server_key is not None and on_new_host_key is not None:
            try:
                result = on_new_host_key(host_key_line(server_key))
                if inspect.isawaitable(result):
                    await result
            except BaseException:  # the key could not be pinned: don't leave the connection open
                conn.close()
                raise
    return conn


async def open_tunnel(
    conn: asyncssh.SSHClientConnection, remote_host: str, remote_port: int
) -> tuple[int, Callable[[], Awaitable[None]]]:
    """Forward a local 127.0.0.1 port to `remote_host:remote_port` as seen from the instance (ssh -L).

    Returns `(local_port, close)`; `await close()` stops listening (the SSH connection stays open).
    """
    try:
        listener = await conn.forward_local_port("127.0.0.1", 0, remote_host, remote_port)
    except (OSError, asyncssh.Error) as exc:
        raise SSHUnavailable(f"cannot open a tunnel to {remote_host}:{remote_port}: {exc}") from exc

    async def close() -> None:
        listener.close()
        await listener.wait_closed()

    return listener.get_port(), close
