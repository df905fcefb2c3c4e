"""Fault switches of the Vast.ai emulator, mutable while it runs (directly or via `POST /__sim/faults`).

Counters ("next N calls") are consumed as calls arrive. Instance faults can target a given instance id,
every instance created on a given offer (a bad host), or the next N creates (the caller does not know the
instance id before it exists).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

# What can go wrong with one instance:
#   stuck_loading - stays in `loading` forever (slow or broken image pull)
#   offline       - reaches running, then the host stops heartbeating: `unknown`, then `offline`
#   exited        - the container exits right after starting (`exited`, intended_status still `running`)
#   ssh_never     - `running` with ports published, but nothing boots behind them (connections refused)
#   oci_error     - stays `created` with an "OCI runtime create failed" status_msg
INSTANCE_FAULTS = ("stuck_loading", "offline", "exited", "ssh_never", "oci_error")
InstanceFault = Literal["stuck_loading", "offline", "exited", "ssh_never", "oci_error"]

# Route names used by `server_error_route` and the rate limiter.
ROUTES = (
    "search",
    "create",
    "show",
    "list",
    "list_v0",
    "manage",
    "destroy",
    "ssh",
    "ssh_keys",
    "logs",
    "user",
)


@dataclass
class VastFaults:
    """Switches; all off by default. Mutate fields at run time; the emulator reads them per request."""

    rate_limit_burst: int = 0  # next N API calls answer 429 (plain text)
    rate_limit_retry_after: float | None = None  # send Retry-After with those 429s
    rate_limit_body: Literal["text", "detail", "json"] = "text"  # body shape of every 429 (see http.py)
    server_errors: int = 0  # next N API calls (optionally only of one route) answer 5xx
    server_error_route: str | None = None
    server_error_status: int = 500
    take_offer_ids: set[int] = field(default_factory=set)  # rented by someone else when a create arrives
    take_next_creates: int = 0  # the next N creates find their offer just taken
    create_timeouts: int = 0  # the next N creates DO create, then never answer in time
    create_timeout_mode: Literal["sleep", "drop"] = "sleep"  # hold the response / drop the connection
    create_timeout_s: float = 60.0  # how long "sleep" holds the answer
    instance_faults: dict[int, str] = field(default_factory=dict)  # instance id -> fault
    offer_faults: dict[int, str] = field(default_factory=dict)  # offer id -> fault for instances on it
    next_instance_faults: list[str] = field(default_factory=list)  # applied to the next creates, in order
    null_shows_after_create: int = 0  # each new instance answers `{"instances": null}` to its first N shows

    def take_server_error(self, route: str) -> int | None:
        """Consume one 5xx if armed for this route; returns the status to answer."""
        if self.server_errors > 0 and self.server_error_route in (None, route):
            self.server_errors -= 1
            return self.server_error_status
        return None

    def take_rate_limit(self) -> bool:
        if self.rate_limit_burst > 0:
            self.rate_limit_burst -= 1
            return True
        return False

    def take_offer(self, offer_id: int) -> bool:
        """Whether the offer is snatched away just before this create."""
        if offer_id in self.take_offer_ids:
            self.take_offer_ids.discard(offer_id)
            return True
        if self.take_next_creates > 0:
            self.take_next_creates -= 1
            return True
        return False

    def take_create_timeout(self) -> bool:
        if self.create_timeouts > 0:
            self.create_timeouts -= 1
            return True
        return False

    def fault_for_new_instance(self, offer_id: int) -> str | None:
        if self.next_instance_faults:
            return self.next_instance_faults.pop(0)
        return self.offer_faults.get(offer_id)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON patch (as posted to `/__sim/faults`); unknown keys or fault names raise ValueError."""
        known = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault switch {key!r}")
            if key == "take_offer_ids":
                value = {int(v) for v in value}
            elif key in ("instance_faults", "offer_faults"):
                value = {int(k): str(v) for k, v in value.items()}
                _check_names(value.values())
            elif key == "next_instance_faults":
                value = [str(v) for v in value]
                _check_names(value)
            elif key == "create_timeout_mode" and value not in ("sleep", "drop"):
                raise ValueError("create_timeout_mode must be 'sleep' or 'drop'")
            elif key == "rate_limit_body" and value not in ("text", "detail", "json"):
                raise ValueError("rate_limit_body must be 'text', 'detail' or 'json'")
            setattr(self, key, value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, set):
                value = sorted(value)
            elif isinstance(value, dict):
                value = {str(k): v for k, v in value.items()}
            out[f.name] = value
        return out


def _check_names(names: Any) -> None:
    for name in names:
        if name not in INSTANCE_FAULTS:
            raise ValueError(f"unknown instance fault {name!r} (known: {', '.join(INSTANCE_FAULTS)})")
