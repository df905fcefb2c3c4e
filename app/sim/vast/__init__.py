"""Vast.ai REST API emulator (the simulated world's stand-in for console.vast.ai).

emu = VastEmulator(default_market(200), api_key="k", time_scale=0.0)
url = await emu.start("127.0.0.1", 0)   # -> "http://127.0.0.1:PORT"; point a Vast client at it
...
await emu.stop()
"""

from app.sim.vast.backend import BackendInfo, InstanceBackend, invented_backend_info, refusing_port
from app.sim.vast.faults import INSTANCE_FAULTS, VastFaults
from app.sim.vast.instances import SimInstance
from app.sim.vast.lifecycle import Timings
from app.sim.vast.market import GPU_CATALOG, default_market, make_offer, priced_offer
from app.sim.vast.server import Call, VastEmulator

__all__ = [
    "GPU_CATALOG",
    "INSTANCE_FAULTS",
    "BackendInfo",
    "Call",
    "InstanceBackend",
    "SimInstance",
    "Timings",
    "VastEmulator",
    "VastFaults",
    "default_market",
    "invented_backend_info",
    "make_offer",
    "priced_offer",
    "refusing_port",
]
