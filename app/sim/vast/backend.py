"""What stands behind a simulated instance once it is `running`.

The simulated world plugs a real SSH server + ComfyUI emulator in here (`InstanceBackend`). Without a
backend the emulator invents ports on 127.0.0.1 that refuse connections, so clients see realistic
`ports`/`ssh_port` values but nothing answers (and nothing ever reaches the internet).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class BackendInfo:
    """Where a booted instance can be reached. `ports` maps container ports ("22/tcp", "8188/tcp") to
    host ports on `public_ipaddr`; `ssh_host:ssh_port` is the (proxy) SSH endpoint."""

    public_ipaddr: str
    ssh_host: str
    ssh_port: int
    ports: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class InstanceBackend(Protocol):
    """Boots and tears down what runs "inside" a simulated instance.

    `boot` is called when an instance becomes `running` (again after every stop/start), with the create
    request body as sent (`env`, `onstart`, `image`, `runtype`, ...) and the public keys authorised for the
    instance (account keys at create time + keys attached since). `teardown` is called on stop and on
    destroy. Optional extra method: `async add_ssh_key(instance_id, key)` for keys attached while running.
    """

    async def boot(
        self, instance_id: int, create_body: dict[str, Any], ssh_keys: list[str]
    ) -> BackendInfo: ...

    async def teardown(self, instance_id: int) -> None: ...


def refusing_port(host: str = "127.0.0.1") -> int:
    """A port number that nothing listens on right now (bound then released), so connects are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def invented_backend_info(container_ports: list[str], host: str = "127.0.0.1") -> BackendInfo:
    """Plausible addresses for an instance with no backend: every published port refuses connections."""
    ports = {p: refusing_port(host) for p in container_ports}
    return BackendInfo(public_ipaddr=host, ssh_host=host, ssh_port=refusing_port(host), ports=ports)
