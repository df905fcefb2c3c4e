"""Turn ComfyUI's per-node WebSocket progress into one monotonic 0..1 fraction for a whole job.

A Wan job runs two sampler passes (high noise, then low noise) that dominate its time; everything
else (model loads, VAE decode, video encode) is short or unpredictable. So the fraction is the sum over
the sampler passes of `share * (value / max)`, each pass weighted by its step count from the graph, and
a stage label tells what is happening between passes. Without sampler ids, the fraction is the share
of the graph's nodes that finished (cached nodes count as finished).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Progress:
    prompt_id: str
    fraction: float  # 0..1, never decreases within a job
    stage: str  # queued | loading | sampling 1/2 | decoding | done ...
    node_id: str | None = None
    value: int | None = None  # step within the current sampler pass
    max: int | None = None


def sampler_shares(graph: Mapping[str, Any], progress_nodes: Sequence[str]) -> dict[str, float]:
    """Weight each sampler pass by the steps it runs (KSamplerAdvanced start/end); equal if unknown."""
    weights: dict[str, float] = {}
    for node_id in progress_nodes:
        inputs = (graph.get(node_id) or {}).get("inputs") or {}
        steps = inputs.get("steps")
        start = inputs.get("start_at_step", 0)
        end = inputs.get("end_at_step", steps)
        w = 1.0
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (steps, start, end)):
            w = float(max(0.0, min(end, steps) - start)) or 1.0
        weights[node_id] = w
    total = sum(weights.values()) or 1.0
    return {k: v / total for k, v in weights.items()}


class ProgressTracker:
    """Feed it every WS message of one prompt; it returns a new `Progress` when the view changed."""

    def __init__(self, prompt_id: str, graph: Mapping[str, Any], progress_nodes: Sequence[str] | None = None):
        self.prompt_id = prompt_id
        self._order = [n for n in (progress_nodes or []) if n in graph]
        self._shares = sampler_shares(graph, self._order) if self._order else {}
        self._all_nodes = set(graph)
        self._node_frac: dict[str, float] = {}
        self._finished: set[str] = set()
        self._stage = "queued"
        self._node: str | None = None
        self._value: int | None = None
        self._max: int | None = None
        self._fraction = 0.0
        self._last: Progress | None = None

    @property
    def fraction(self) -> float:
        return self._fraction

    def feed(self, msg_type: str, data: Mapping[str, Any]) -> Progress | None:
        if data.get("prompt_id") not in (None, self.prompt_id):
            return None
        handler = getattr(self, f"_on_{msg_type}", None)
        if handler is None:
            return None
        handler(data)
        return self._emit()

    def finish(self) -> Progress | None:
        """Success: the job is complete whatever the samplers reported."""
        self._stage, self._node, self._value, self._max = "done", None, None, None
        self._fraction = 1.0
        return self._emit()

    # --- message handlers ------------------------------------------------------------------------
    def _on_execution_start(self, data: Mapping[str, Any]) -> None:
        self._stage = "loading"

    def _on_execution_cached(self, data: Mapping[str, Any]) -> None:
        for node in data.get("nodes") or []:
            self._done(str(node))
        if self._stage == "queued":
            self._stage = "loading"

    def _on_executing(self, data: Mapping[str, Any]) -> None:
        node = data.get("node")
        if node is None:
            return  # the "prompt finished" marker; success/failure comes from execution_* events
        node = str(node)
        self._node, self._value, self._max = node, None, None
        if node in self._shares:
            # execution order: every sampler pass before this one has finished
            for earlier in self._order[: self._order.index(node)]:
                self._done(earlier)
        self._stage = self._stage_for(node)

    def _on_progress(self, data: Mapping[str, Any]) -> None:
        node = str(data.get("node")) if data.get("node") is not None else self._node
        value, maximum = data.get("value"), data.get("max")
        if node is None or not isinstance(value, int | float) or not isinstance(maximum, int | float):
            return
        if maximum > 0 and node in self._shares:
            self._node_frac[node] = max(self._node_frac.get(node, 0.0), min(1.0, value / maximum))
        if node == self._node or node in self._shares:
            self._node, self._value, self._max = node, int(value), int(maximum)
            self._stage = self._stage_for(node)

    def _on_progress_state(self, data: Mapping[str, Any]) -> None:
        for node_id, st in (data.get("nodes") or {}).items():
            node_id = str(node_id)
            if not isinstance(st, Mapping):
                continue
            if st.get("state") == "finished":
                self._done(node_id)
            elif node_id in self._shares:
                value, maximum = st.get("value"), st.get("max")
                if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
                    frac = min(1.0, value / maximum)
                    self._node_frac[node_id] = max(self._node_frac.get(node_id, 0.0), frac)

    def _on_executed(self, data: Mapping[str, Any]) -> None:
        if data.get("node") is not None:
            self._done(str(data["node"]))

    # --- helpers ---------------------------------------------------------------------------------
    def _done(self, node: str) -> None:
        self._finished.add(node)
        if node in self._shares:
            self._node_frac[node] = 1.0

    def _stage_for(self, node: str) -> str:
        if node in self._shares:
            return f"sampling {self._order.index(node) + 1}/{len(self._order)}"
        if self._order and all(self._node_frac.get(n, 0.0) >= 1.0 for n in self._order):
            return "decoding"
        if self._order and any(self._node_frac.get(n, 0.0) > 0.0 for n in self._order):
            return self._stage  # a helper node between passes: keep the sampler label
        return "loading" if self._order else "running"

    def _compute(self) -> float:
        if self._shares:
            return sum(share * self._node_frac.get(n, 0.0) for n, share in self._shares.items())
        if not self._all_nodes:
            return 0.0
        return len(self._finished & self._all_nodes) / len(self._all_nodes)

    def _emit(self) -> Progress | None:
        if self._stage != "done":
            # never report 1.0 before success: decode and encode still follow the samplers
            self._fraction = max(self._fraction, min(self._compute(), 0.999))
        p = Progress(
            self.prompt_id, round(self._fraction, 4), self._stage, self._node, self._value, self._max
        )
        if p == self._last:
            return None
        self._last = p
        return p
