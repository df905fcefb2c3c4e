"""The provider-neutral shapes every GPU source speaks: `Instance` and the `Provider` interface.

`vast` (rents on Vast.ai), `static` (a user's own ComfyUI boxes, never created or destroyed by us) and the
simulated world (the Vast.ai emulator behind the same `vast` code) all implement `Provider`, so the pool
scheduler never asks which one it is talking to. Modelled on SkyPilot's provisioner: dataclasses in,
dataclasses out; find instances by label and converge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class InstanceState(StrEnum):
    CREATING = "creating"  # create call sent or about to be; the id may not be known yet
    BOOTING = "booting"  # the provider reports it starting (Vast: null/created/loading)
    PROVISIONING = "provisioning"  # SSH up; models and custom nodes being ensured
    READY = "ready"  # ComfyUI answers with every node and model the workflow needs
    FAILED = "failed"  # will not become ready; must be destroyed
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


PENDING_STATES = frozenset({InstanceState.CREATING, InstanceState.BOOTING, InstanceState.PROVISIONING})
LIVE_STATES = PENDING_STATES | {InstanceState.READY, InstanceState.FAILED, InstanceState.DESTROYING}
TERMINAL_STATES = frozenset({InstanceState.DESTROYED})


@dataclass
class SSHTarget:
    host: str
    port: int
    user: str = "root"
    # OpenSSH public key line of the host ("ssh-ed25519 AAAA..."), pinned on first contact.
    host_key: str | None = None

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass
class ComfyEndpoint:
    """How to reach ComfyUI.

    `url` is used directly when `via_tunnel` is False. With `via_tunnel`, the control plane opens an SSH
    local forward to `remote_host:remote_port` on the instance and talks to the forwarded port instead.
    """

    url: str | None = None
    via_tunnel: bool = True
    remote_host: str = "127.0.0.1"
    remote_port: int = 18188
    token: str | None = field(default=None, repr=False)  # bearer token (Vast: WEB_PASSWORD); secret
    basic_user: str | None = None
    basic_password: str | None = field(default=None, repr=False)


@dataclass
class Instance:
    provider: str
    id: str
    label: str
    state: InstanceState = InstanceState.CREATING
    price_per_hour: float = 0.0
    ssh: SSHTarget | None = None
    comfy: ComfyEndpoint | None = None
    comfy_dir: str = "/workspace/ComfyUI"
    created_at: float = field(default_factory=time.time)
    ready_at: float | None = None
    destroyed_at: float | None = None
    last_used_at: float | None = None
    machine_id: str | None = None
    offer_id: str | None = None
    gpu_name: str | None = None
    status_msg: str | None = None
    simulated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.state in LIVE_STATES

    def spent_usd(self, now: float | None = None) -> float:
        """Money this instance has cost so far: $/h x hours alive (until destroyed)."""
        end = self.destroyed_at or (now if now is not None else time.time())
        return max(0.0, end - self.created_at) / 3600.0 * self.price_per_hour


@dataclass(frozen=True)
class CreateRequest:
    """What an instance must be able to do. Providers turn it into their own offer filters."""

    workflow: str
    disk_gb: float  # models plus headroom
    min_gpu_ram_gb: float = 24.0
    exclude_machines: frozenset[str] = frozenset()


@runtime_checkable
class Provider(Protocol):
    name: str
    can_create: bool  # False for `static`: never creates or destroys

    async def list(self) -> list[Instance]:
        """Every instance this provider holds for us (by label), in the provider's current state."""
        ...

    async def create(self, request: CreateRequest) -> Instance:
        """Rent one instance. It is recorded in the ledger before this returns."""
        ...

    async def wait_ready(self, instance: Instance, deadline: float) -> Instance:
        """Wait (monotonic `deadline`) until SSH answers. Raises on bad states; never destroys."""
        ...

    async def destroy(self, instance: Instance) -> None:
        """Destroy; idempotent (already gone is success)."""
        ...
