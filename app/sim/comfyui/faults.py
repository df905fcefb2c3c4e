"""Fault switches of the ComfyUI emulator: the failure modes a real rented ComfyUI shows.

Mutable at run time (tests flip them between calls; `POST /__sim/faults` sets them over HTTP), so
every check reads the field when it matters instead of caching it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class ComfyFaults:
    # execution_error (real shape) when execution reaches this node id
    error_at_node: str | None = None
    error_message: str = "simulated failure injected by the ComfyUI emulator"
    error_type: str = "RuntimeError"
    # close the prompt's WebSocket(s) when execution reaches this node id (one shot: cleared when fired)
    drop_ws_at_node: str | None = None
    # stop sending anything to any socket (connections stay open, execution continues)
    silent_ws: bool = False
    # become silent when execution reaches this node id (sets silent_ws; cleared when fired)
    silent_ws_at_node: str | None = None
    # /history shows a finished prompt only this many seconds after execution_success/_error
    history_lag_s: float = 0.0
    # for this many seconds after start(): answer 502 (Caddy in front of a booting ComfyUI) or refuse
    slow_start_s: float = 0.0
    slow_start_mode: Literal["502", "refuse"] = "502"
    # the process dies when execution reaches this node id: listener closed, queue and prompt lost
    crash_at_node: str | None = None
    # after a crash, listen again (fresh process: empty queue/history) after this many seconds
    crash_restart_after_s: float | None = None
    # pad every MP4 written by VHS_VideoCombine to this many bytes with a trailing `free` box
    video_pad_bytes: int = 0

    def update(self, values: dict[str, Any]) -> None:
        """Set fields from JSON; unknown names are an error so typos do not silently do nothing."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown fault switch(es): {', '.join(unknown)}")
        for key, value in values.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
