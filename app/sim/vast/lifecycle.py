"""The instance state machine (reference vastai.md §4), driven lazily on every read and by a ticker.

Durations are emulated seconds multiplied by `time_scale` (0 = every due transition happens at the next
observation, so a poll right after create already sees `running`). Booting the backend happens on the
loading -> running edge, so `ports`/`ssh_port` are published only once something answers behind them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from app.sim.vast.backend import BackendInfo, InstanceBackend, invented_backend_info
from app.sim.vast.instances import SimInstance, container_ports

log = logging.getLogger(__name__)

_LAYERS = ["4f4fb700ef54", "a3ed95caeb02", "9c1b6dd6c1e6", "e8e7b7c0c5b3", "1d5f2c3a9b7e", "7b4c1d2e8f90"]


@dataclass
class Timings:
    """Emulated seconds each phase lasts before the next transition."""

    scheduling_s: float = 4.0
    loading_s: float = 45.0
    restart_loading_s: float = 8.0
    exit_after_s: float = 3.0  # `exited` fault: how long the container runs before dying
    unknown_after_s: float = 10.0  # `offline` fault: running -> unknown
    offline_after_s: float = 20.0  # `offline` fault: unknown -> offline


def pull_message(progress: float, image: str) -> str:
    """A docker pull line for a pull that is `progress` (0..1) done, as `status_msg` shows it."""
    progress = min(max(progress, 0.0), 0.999)
    idx = int(progress * len(_LAYERS))
    within = progress * len(_LAYERS) - idx
    layer = _LAYERS[idx]
    if within < 0.15:
        return f"{layer}: Pulling fs layer\n"
    if within < 0.75:
        total_mb = 180.0 + 97.0 * idx
        done = total_mb * (within - 0.15) / 0.6
        bar = "=" * int(50 * (within - 0.15) / 0.6)
        return f"{layer}: Downloading [{bar:<50}>]  {done:.1f}MB/{total_mb:.1f}MB\n"
    if within < 0.9:
        return f"{layer}: Download complete\n"
    return f"{layer}: Pull complete\n"


class Lifecycle:
    def __init__(
        self,
        *,
        time_scale: float,
        backend: InstanceBackend | None,
        timings: Timings | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.time_scale = float(time_scale)
        self.backend = backend
        self.timings = timings or Timings()
        self.host = host
        self._locks: dict[int, asyncio.Lock] = {}

    def _due(self, inst: SimInstance, emulated_s: float) -> bool:
        return time.monotonic() - inst.phase_started >= emulated_s * self.time_scale

    def _enter(self, inst: SimInstance, phase: str, msg: str | None) -> None:
        inst.phase = phase
        inst.phase_started = time.monotonic()
        inst.status_msg = msg
        inst.log(f"[vast] actual_status={phase} {msg.strip() if msg else ''}".rstrip())

    async def advance(self, inst: SimInstance) -> None:
        """Apply every transition that is due (serialised per instance: boot runs once)."""
        if inst.destroyed:
            return
        lock = self._locks.setdefault(inst.id, asyncio.Lock())
        async with lock:
            for _ in range(8):  # bounded: each pass applies at most one transition
                if inst.destroyed or not await self._step(inst):
                    break

    async def _step(self, inst: SimInstance) -> bool:
        t = self.timings
        image = str(inst.body.get("image") or "")
        if inst.intended_status == "stopped":
            return False
        if inst.phase == "scheduling":
            if not self._due(inst, t.scheduling_s):
                return False
            if inst.fault == "oci_error":
                self._enter(
                    inst,
                    "created",
                    "Error response from daemon: failed to create task for container: failed to create shim "
                    "task: OCI runtime create failed: runc create failed: unable to start container process: "
                    'exec: "entrypoint.sh": executable file not found in $PATH: unknown',
                )
                return True
            self._enter(inst, "loading", pull_message(0.0, image))
            return True
        if inst.phase == "loading":
            duration = t.loading_s if inst.boot_count == 0 else t.restart_loading_s
            if inst.fault == "stuck_loading" or not self._due(inst, duration):
                elapsed = time.monotonic() - inst.phase_started
                scaled = duration * self.time_scale
                progress = (elapsed / scaled) if scaled > 0 else 0.5
                if inst.fault == "stuck_loading":
                    progress = min(progress, 0.5) if scaled > 0 else 0.5
                inst.status_msg = pull_message(progress, image)
                return False
            await self._boot(inst)
            return True
        if inst.phase == "running":
            if inst.fault == "exited" and self._due(inst, t.exit_after_s):
                await self._teardown(inst)
                self._enter(inst, "exited", "Error: container exited with code 1 (simulated crash)")
                return True
            if inst.fault == "offline" and self._due(inst, t.unknown_after_s):
                await self._teardown(inst)
                self._enter(inst, "unknown", "no heartbeat from host (simulated)")
                return True
            return False
        if inst.phase == "unknown" and inst.fault == "offline" and self._due(inst, t.offline_after_s):
            self._enter(inst, "offline", "host disconnected (simulated)")
            return True
        return False

    async def _boot(self, inst: SimInstance) -> None:
        ports = container_ports(inst.env, inst.runtype) if inst.offer.get("direct_port_count") else []
        info: BackendInfo
        if self.backend is not None and inst.fault not in ("ssh_never", "exited"):
            try:
                info = await self.backend.boot(inst.id, dict(inst.body), inst.key_texts())
            except asyncio.CancelledError:
                inst.booted = True  # possibly half-booted: let the next teardown clean up
                raise
            except Exception as exc:  # a backend failure is the container failing to start
                log.warning("sim vast: backend boot of instance %s failed: %s", inst.id, exc)
                self._enter(inst, "exited", f"Error: container failed to start: {exc}")
                return
            inst.booted = True
            merged = dict(info.ports)
            invented = invented_backend_info([p for p in ports if p not in merged], self.host)
            merged.update(invented.ports)
            if "22/tcp" in ports and "22/tcp" not in info.ports:
                merged["22/tcp"] = info.ssh_port
            info = BackendInfo(info.public_ipaddr, info.ssh_host, info.ssh_port, merged)
        else:
            info = invented_backend_info(ports, self.host)
        # only published container ports appear in `ports` (proxy-only hosts publish none)
        info = BackendInfo(
            info.public_ipaddr,
            info.ssh_host,
            info.ssh_port,
            {k: v for k, v in info.ports.items() if k in ports},
        )
        inst.info = info
        inst.boot_count += 1
        inst.running_since = time.time()
        runtype_word = (
            "jupyter" if "jupyter" in inst.runtype else ("args" if inst.runtype == "args" else "ssh")
        )
        self._enter(inst, "running", f"success, running {inst.body.get('image')}/{runtype_word}")

    async def _teardown(self, inst: SimInstance) -> None:
        if inst.booted and self.backend is not None:
            inst.booted = False
            try:
                await self.backend.teardown(inst.id)
            except Exception as exc:
                log.warning("sim vast: backend teardown of instance %s failed: %s", inst.id, exc)
        inst.info = None

    async def stop(self, inst: SimInstance, reason: str = "stopped by user") -> None:
        async with self._locks.setdefault(inst.id, asyncio.Lock()):
            inst.intended_status = "stopped"
            if inst.phase in ("running", "loading", "scheduling", "created"):
                await self._teardown(inst)
                inst.running_since = None
                self._enter(inst, "exited", reason)

    async def start(self, inst: SimInstance) -> None:
        async with self._locks.setdefault(inst.id, asyncio.Lock()):
            if inst.intended_status == "running" and inst.phase not in ("exited", "stopped"):
                return
            inst.intended_status = "running"
            if inst.phase in ("unknown", "offline"):
                return  # the host is gone; nothing comes back on its own
            self._enter(inst, "scheduling", None)

    async def destroy(self, inst: SimInstance) -> None:
        async with self._locks.setdefault(inst.id, asyncio.Lock()):
            await self._teardown(inst)
            inst.destroyed = True
            inst.log("[vast] destroyed")
        self._locks.pop(inst.id, None)

    def inject(self, inst: SimInstance, fault: str | None) -> None:
        """Give a live instance a fault now; its timer restarts so e.g. `offline` follows after the grace."""
        inst.fault = fault
        inst.phase_started = time.monotonic()
