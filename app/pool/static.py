"""`static`: ComfyUI endpoints the user already runs (own GPU boxes, instances rented by hand).

They are listed from settings and used as they are; comfyfleet never creates or destroys them, so
`can_create` is False and `destroy` only forgets. A configured SSH target lets the pool provision them.
"""

from __future__ import annotations

import logging
import re

from app.config import Settings, StaticEndpoint
from app.errors import ConfigError
from app.pool.provider import ComfyEndpoint, CreateRequest, Instance, InstanceState, SSHTarget

log = logging.getLogger(__name__)

_SSH_RE = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>[^:@]+)(?::(?P<port>\d+))?$")


def parse_ssh(spec: str, host_key: str | None = None) -> SSHTarget:
    m = _SSH_RE.match(spec.strip())
    if not m:
        raise ConfigError(f"static endpoint ssh {spec!r}: expected user@host:port")
    return SSHTarget(
        host=m.group("host"),
        port=int(m.group("port") or 22),
        user=m.group("user") or "root",
        host_key=host_key,
    )


def endpoint_instance(ep: StaticEndpoint) -> Instance:
    comfy = ComfyEndpoint(
        url=ep.url.rstrip("/"),
        via_tunnel=False,
        token=ep.token.get_secret_value() if ep.token else None,
        basic_user=ep.basic_user,
        basic_password=ep.basic_password.get_secret_value() if ep.basic_password else None,
    )
    return Instance(
        provider="static",
        id=f"static-{ep.name}",
        label=f"static-{ep.name}",
        state=InstanceState.READY,
        price_per_hour=ep.price_per_hour,
        ssh=parse_ssh(ep.ssh, ep.ssh_host_key) if ep.ssh else None,
        comfy=comfy,
        comfy_dir=ep.comfy_dir,
    )


class StaticProvider:
    name = "static"
    can_create = False

    def __init__(self, settings: Settings) -> None:
        self._instances = {inst.id: inst for inst in map(endpoint_instance, settings.static_endpoints)}

    async def list(self) -> list[Instance]:
        return list(self._instances.values())

    async def create(self, request: CreateRequest) -> Instance:
        raise ConfigError("the static provider cannot rent instances; add endpoints to STATIC_ENDPOINTS")

    async def wait_ready(self, instance: Instance, deadline: float) -> Instance:
        return instance

    async def destroy(self, instance: Instance) -> None:
        log.info("static endpoint %s is not ours to destroy; leaving it running", instance.id)
