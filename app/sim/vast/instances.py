"""One simulated instance: its state and how the real API renders it (reference vastai.md §3.4).

The record mixes host facts copied from the rented offer with the contract's own state. Fields that only
exist once the container runs (`ports`, `ssh_host`, `ssh_port`, `public_ipaddr`) stay null before that.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from app.sim.vast.backend import BackendInfo

# Host facts an instance record repeats from its offer.
_FROM_OFFER = (
    "machine_id",
    "host_id",
    "bundle_id",
    "num_gpus",
    "gpu_name",
    "gpu_ram",
    "gpu_frac",
    "gpu_arch",
    "gpu_lanes",
    "gpu_mem_bw",
    "bw_nvlink",
    "compute_cap",
    "cuda_max_good",
    "driver_version",
    "cpu_arch",
    "cpu_name",
    "cpu_cores",
    "cpu_cores_effective",
    "cpu_ram",
    "disk_name",
    "disk_bw",
    "inet_up",
    "inet_down",
    "inet_up_cost",
    "inet_down_cost",
    "geolocation",
    "verification",
    "min_bid",
    "dph_base",
    "storage_cost",
    "storage_total_cost",
    "reliability2",
    "dlperf",
    "total_flops",
    "score",
    "end_date",
    "direct_port_count",
    "static_ip",
    "hosting_type",
    "credit_discount_max",
    "pci_gen",
    "pcie_bw",
    "mobo_name",
    "os_version",
    "has_avx",
)

# Columns v1 `select_filters` / `order_by` accept (stored ones; computed ones like dph_total answer 400).
STORED_COLUMNS = (
    "id",
    "label",
    "actual_status",
    "intended_status",
    "cur_state",
    "next_state",
    "gpu_name",
    "verification",
    "machine_id",
    "host_id",
    "image_uuid",
    "template_id",
    "template_hash_id",
    "start_date",
    "is_bid",
    "geolocation",
)

_RUNTYPE_TOKENS = {
    "ssh": ["ssh_proxy"],
    "ssh_proxy": ["ssh_proxy"],
    "ssh_direct": ["ssh_direc"],
    "ssh_direc": ["ssh_direc"],
    "jupyter": ["jupyter_proxy", "ssh_proxy"],
    "jupyter_proxy": ["jupyter_proxy", "ssh_proxy"],
    "jupyter_direct": ["jupyter_direc", "ssh_direc"],
    "jupyter_direc": ["jupyter_direc", "ssh_direc"],
    "args": ["args"],
}
_RUNTYPE_ORDER = ["jupyter_direc", "jupyter_proxy", "ssh_direc", "ssh_proxy", "args"]
_PORT_KEY = re.compile(r"^-p\s+(?:(\d+):)?(\d+)(/(tcp|udp))?$")


def normalize_runtype(runtype: Any, has_args: bool) -> str | None:
    """Wire spelling -> the form instances report in `image_runtype`; None if the runtype is unknown."""
    if runtype in (None, ""):
        runtype = "args" if has_args else "ssh"
    tokens: list[str] = []
    for word in re.split(r"[\s,]+", str(runtype).strip()):
        if word not in _RUNTYPE_TOKENS:
            return None
        tokens.extend(_RUNTYPE_TOKENS[word])
    ordered = [t for t in _RUNTYPE_ORDER if t in tokens]
    if any(t.startswith("ssh") for t in ordered) and not any(t.startswith("jupyter") for t in ordered):
        ordered.insert(0, "ssh")
    return " ".join(ordered)


def container_ports(env: dict[str, Any], runtype: str) -> list[str]:
    """Container ports that get a public mapping: `-p H:C` env keys plus the runtype's direct ports."""
    ports: list[str] = []
    if "ssh_direc" in runtype:
        ports.append("22/tcp")
    if "jupyter_direc" in runtype:
        ports.append("8080/tcp")
    for key in env:
        m = _PORT_KEY.match(str(key).strip())
        if m:
            name = f"{m.group(2)}/{m.group(4) or 'tcp'}"
            if name not in ports:
                ports.append(name)
    return ports


@dataclass
class SimInstance:
    id: int
    offer_id: int
    offer: dict[str, Any]  # the offer as priced at create time (storage for `disk`, bid or not)
    body: dict[str, Any]  # the create request body, as sent
    runtype: str
    env: dict[str, Any]
    disk: float
    instance_api_key: str
    fault: str | None = None
    label: str | None = None
    phase: str = "scheduling"  # scheduling|created|loading|running|exited|unknown|offline|stopped
    intended_status: str = "running"
    status_msg: str | None = None
    phase_started: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.time)
    running_since: float | None = None
    info: BackendInfo | None = None
    booted: bool = False
    ssh_keys: list[dict[str, Any]] = field(default_factory=list)
    jupyter_token: str = field(default_factory=lambda: secrets.token_hex(32))
    log_lines: list[str] = field(default_factory=list)
    boot_count: int = 0
    null_shows: int = 0  # first N shows answer null, as Vast sometimes does right after create
    destroyed: bool = False

    @property
    def actual_status(self) -> str | None:
        return None if self.phase == "scheduling" else self.phase

    @property
    def dph_total(self) -> float:
        return float(self.offer["dph_total"])

    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self.log_lines.append(f"{stamp} {line}")

    def key_texts(self) -> list[str]:
        return [k["public_key"] for k in self.ssh_keys]

    def render(self) -> dict[str, Any]:
        """The instance as `GET /api/v0/instances/{id}/` answers it."""
        now = time.time()
        offer = self.offer
        out: dict[str, Any] = {k: offer.get(k) for k in _FROM_OFFER}
        running = self.phase == "running"
        cur = "stopped" if self.intended_status == "stopped" else "running"
        out.update(
            {
                "id": self.id,
                "actual_status": self.actual_status,
                "intended_status": self.intended_status,
                "cur_state": cur,
                "next_state": cur,
                "status_msg": self.status_msg,
                "label": self.label,
                "template_id": None,
                "template_hash_id": self.body.get("template_hash_id"),
                "template_name": None,
                "image_uuid": self.body.get("image"),
                "image_args": list(self.body.get("args") or []),
                "image_runtype": self.runtype,
                "extra_env": [[str(k), str(v)] for k, v in self.env.items()],
                "onstart": self.body.get("onstart"),
                "jupyter_token": self.jupyter_token,
                "ssh_host": None,
                "ssh_port": None,
                "ssh_idx": None,
                "machine_dir_ssh_port": None,
                "public_ipaddr": None,
                "local_ipaddrs": "10.2.202.31 172.17.0.1 \n",
                "direct_port_start": 40100 if offer.get("direct_port_count") else -1,
                "direct_port_end": 40100 + int(offer.get("direct_port_count") or 0) - 1
                if offer.get("direct_port_count")
                else -1,
                "gpu_totalram": int(offer.get("gpu_ram") or 0) * int(offer.get("num_gpus") or 1),
                "gpu_util": round(3.0 + (self.id % 7), 1) if running else 0.0,
                "gpu_temp": 41.0 if running else None,
                "cpu_util": 0.4 if running else 0.0,
                "mem_limit": round(float(offer.get("cpu_ram") or 0) / 1000.0, 1),
                "mem_usage": 1.2 if running else 0.0,
                "vmem_usage": 0.5 if running else 0.0,
                "disk_space": self.disk,
                "disk_util": 0.12,
                "disk_usage": 0.12,
                "rentable": True,
                "is_bid": bool(offer.get("is_bid")),
                "dph_total": self.dph_total,
                "start_date": self.created_at,
                "uptime_mins": round((now - self.running_since) / 60.0, 2) if self.running_since else None,
                "duration": max(0.0, float(offer.get("end_date") or now) - now),
                "search": dict(offer.get("search") or {}),
                "instance": {
                    "gpuCostPerHour": float(offer.get("search", {}).get("gpuCostPerHour", 0.0)),
                    "diskHour": float(offer.get("storage_total_cost") or 0.0),
                    "totalHour": self.dph_total,
                    "discountTotalHour": 0,
                    "discountedTotalPerHour": self.dph_total,
                },
                "credit_balance": None,
                "credit_discount": None,
                "time_remaining": "",
                "time_remaining_isbid": "",
            }
        )
        if running and self.info is not None:
            out["ssh_host"] = self.info.ssh_host
            out["ssh_port"] = int(self.info.ssh_port)
            out["ssh_idx"] = "1"
            out["machine_dir_ssh_port"] = int(self.info.ssh_port)
            out["public_ipaddr"] = self.info.public_ipaddr
            out["ports"] = {
                name: [{"HostIp": "0.0.0.0", "HostPort": str(port)}] for name, port in self.info.ports.items()
            }
        return out
