"""Runs one queued prompt the way ComfyUI's PromptExecutor does, event for event.

Order of work: ComfyUI's ExecutionList (pending nodes in insertion order, ready = no unfinished
inputs, prefer output nodes, then nodes feeding one within two hops). Messages: execution_start,
execution_cached, then per node progress_state(running) -> executing -> ticks -> executed ->
progress_state(finished), then execution_success / execution_error / execution_interrupted. Outputs
are cached by input signature like the classic cache, so a re-run reports its nodes as cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.sim.comfyui.loaders import generic_traceback
from app.sim.comfyui.nodes import NODES, generic
from app.sim.comfyui.nodes_base import NodeFailure
from app.sim.comfyui.typed import is_link

if TYPE_CHECKING:
    from app.sim.comfyui.server import ComfyEmulator


class Interrupted(Exception):
    """The interrupt flag was seen at a check point."""


class Crashed(Exception):
    """The crash fault fired: the whole process is gone."""


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class QueueItem:
    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class RunResult:
    status_str: str
    completed: bool
    messages: list[tuple[str, dict[str, Any]]]
    outputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)


def _resolve_inputs(raw: dict[str, Any], values: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """Widget values as they are, links replaced by the source node's output (None if it has none)."""
    resolved: dict[str, Any] = {}
    for name, value in raw.items():
        if not is_link(value):
            resolved[name] = value
        elif value[0] in values:
            outputs = values[value[0]]
            resolved[name] = outputs[value[1]] if 0 <= value[1] < len(outputs) else None
    return resolved


class ExecutionOrder:
    """ComfyUI's ExecutionList for a static graph (no lazy inputs, no expansion)."""

    def __init__(self, prompt: dict[str, Any], object_info: dict[str, Any], cached: set[str]) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.cached = cached
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            unique = stack.pop()
            if unique in self.pending:
                continue
            self.pending[unique] = None
            self.block_count[unique] = 0
            self.blocking[unique] = {}
            for value in self.prompt[unique].get("inputs", {}).values():
                if is_link(value):
                    source = value[0]
                    if source not in self.cached:
                        stack.append(source)
                        links.append((source, unique))
        for source, target in links:
            if source in self.pending and target not in self.blocking[source]:
                self.blocking[source][target] = None
                self.block_count[target] += 1

    def _is_output(self, node_id: str) -> bool:
        info = self.object_info.get(self.prompt[node_id]["class_type"], {})
        return info.get("output_node") is True

    def pick(self) -> str | None:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for n in ready:
            if self._is_output(n):
                return n
        for n in ready:
            if any(self._is_output(b) for b in self.blocking[n]):
                return n
        for n in ready:
            if any(self._is_output(b2) for b in self.blocking[n] for b2 in self.blocking[b]):
                return n
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for target in self.blocking.pop(node_id):
            self.block_count[target] -= 1


class Executor:
    """One per emulator; holds the output cache between prompts like a live ComfyUI process."""

    def __init__(self, emu: ComfyEmulator) -> None:
        self.emu = emu
        self.cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self.interrupt_requested = False
        self.last_node_id: str | None = None
        self.client_id: str | None = None

    def reset_cache(self) -> None:
        self.cache.clear()

    # --- signatures -----------------------------------------------------------------------------
    def _signatures(self, prompt: dict[str, Any]) -> dict[str, str]:
        sigs: dict[str, str] = {}

        def sig(node_id: str, seen: frozenset[str] = frozenset()) -> str:
            if node_id in sigs:
                return sigs[node_id]
            node = prompt[node_id]
            parts: dict[str, Any] = {}
            for name, value in sorted(node.get("inputs", {}).items()):
                if is_link(value) and value[0] in prompt and value[0] not in seen:
                    parts[name] = [sig(value[0], seen | {node_id}), value[1]]
                else:
                    parts[name] = value
            extra = ""
            file_input = {"LoadImage": "image", "LoadAudio": "audio"}.get(node["class_type"])
            if file_input is not None:
                path = self.emu.install.comfy_dir / "input" / str(node.get("inputs", {}).get(file_input, ""))
                try:
                    st = path.stat()
                    extra = f"{st.st_mtime_ns}:{st.st_size}"
                except OSError:
                    extra = "missing"
            # a digest per node, with its inputs' digests in it: a chained graph (S2V's Extend blocks, each
            # reading the previous one twice) would otherwise nest every upstream signature, doubling per
            # block (the cause of a 63 s submit once)
            text = json.dumps([node["class_type"], parts, extra], sort_keys=True, default=str)
            sigs[node_id] = hashlib.sha256(text.encode()).hexdigest()
            return sigs[node_id]

        for node_id in prompt:
            sig(node_id)
        return sigs

    # --- messaging ------------------------------------------------------------------------------
    async def _message(self, messages: list, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": _now_ms()}
        messages.append((event, data))
        if self.client_id is not None or broadcast:
            await self.emu.hub.send(event, data, self.client_id)

    async def _progress_state(self, prompt_id: str, nodes: dict[str, dict[str, Any]]) -> None:
        await self.emu.hub.send("progress_state", {"prompt_id": prompt_id, "nodes": nodes}, self.client_id)

    @staticmethod
    def _state(node_id: str, prompt_id: str, value: Any, max_value: Any, state: str) -> dict[str, Any]:
        return {
            "value": value,
            "max": max_value,
            "state": state,
            "node_id": node_id,
            "prompt_id": prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def check_interrupt(self) -> None:
        if self.interrupt_requested:
            raise Interrupted

    # --- the run --------------------------------------------------------------------------------
    async def execute(self, item: QueueItem) -> RunResult:
        emu, hub = self.emu, self.emu.hub
        prompt, pid = item.prompt, item.prompt_id
        self.client_id = item.extra_data.get("client_id")
        self.interrupt_requested = False
        object_info = emu.install.effective_object_info()
        messages: list[tuple[str, dict[str, Any]]] = []
        await self._message(messages, "execution_start", {"prompt_id": pid}, False)
        if not emu.models_loaded:  # the first run after a start loads the models from disk
            if emu.model_load_s > 0:
                await asyncio.sleep(emu.model_load_s)
            emu.models_loaded = True

        sigs = self._signatures(prompt)
        self.cache = {s: v for s, v in self.cache.items() if s in set(sigs.values())}
        cached = [n for n in prompt if sigs[n] in self.cache]
        await self._message(messages, "execution_cached", {"nodes": cached, "prompt_id": pid}, False)

        order = ExecutionOrder(prompt, object_info, set(cached))
        for output in item.outputs:
            order.add_node(output)
        values: dict[str, tuple[Any, ...]] = {n: self.cache[sigs[n]][0] for n in cached}
        progress: dict[str, dict[str, Any]] = {}
        result = RunResult("success", True, messages)
        executed: list[str] = []
        current: str | None = None
        try:
            while (node_id := order.pick()) is not None:
                current = node_id
                class_type = prompt[node_id]["class_type"]
                if node_id in values:  # cached output node: replay its UI
                    ui = self.cache[sigs[node_id]][1]
                    if ui is not None:
                        self._record_ui(result, node_id, ui)
                        if self.client_id is not None:
                            await hub.send(
                                "executed",
                                {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid},
                                self.client_id,
                            )
                    progress[node_id] = self._state(node_id, pid, 1, 1, "finished")
                    await self._progress_state(pid, progress)
                    order.complete(node_id)
                    continue
                progress[node_id] = self._state(node_id, pid, 0.0, 1.0, "running")
                await self._progress_state(pid, progress)
                self.last_node_id = node_id
                if self.client_id is not None:
                    await hub.send(
                        "executing",
                        {"node": node_id, "display_node": node_id, "prompt_id": pid},
                        self.client_id,
                    )
                await self._apply_node_faults(node_id)
                self.check_interrupt()
                inputs = _resolve_inputs(prompt[node_id].get("inputs", {}), values)
                if emu.faults.error_at_node == node_id:
                    raise NodeFailure(
                        emu.faults.error_type, emu.faults.error_message + "\n", generic_traceback()
                    )
                ctx = _Context(self, node_id, class_type, pid, progress, item)
                try:
                    outputs, ui = await NODES.get(class_type, generic)(ctx, inputs)
                except NodeFailure as failure:
                    failure.inputs = inputs  # type: ignore[attr-defined]
                    raise
                except (Interrupted, Crashed):
                    raise
                except Exception as exc:  # a stand-in hit an input it cannot use: report it like ComfyUI
                    failure = NodeFailure(type(exc).__name__, f"{exc}\n", generic_traceback())
                    failure.inputs = inputs  # type: ignore[attr-defined]
                    raise failure from exc
                values[node_id] = outputs
                self.cache[sigs[node_id]] = (outputs, ui)
                if ui is not None:
                    self._record_ui(result, node_id, ui)
                    if self.client_id is not None:
                        await hub.send(
                            "executed",
                            {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid},
                            self.client_id,
                        )
                state = progress[node_id]
                progress[node_id] = self._state(node_id, pid, state["max"], state["max"], "finished")
                await self._progress_state(pid, progress)
                executed.append(node_id)
                order.complete(node_id)
        except Interrupted:
            await self._message(
                messages,
                "execution_interrupted",
                {
                    "prompt_id": pid,
                    "node_id": current,
                    "node_type": prompt[current]["class_type"] if current else None,
                    "executed": executed,
                },
                True,
            )
            result.status_str, result.completed = "error", False
            return result
        except NodeFailure as failure:
            raw_inputs = getattr(failure, "inputs", None)
            if raw_inputs is None:
                raw_inputs = {k: v for k, v in prompt[current].get("inputs", {}).items() if not is_link(v)}
            await self._message(
                messages,
                "execution_error",
                {
                    "prompt_id": pid,
                    "node_id": current,
                    "node_type": prompt[current]["class_type"],
                    "executed": executed,
                    "exception_message": failure.exception_message,
                    "exception_type": failure.exception_type,
                    "traceback": failure.traceback,
                    "current_inputs": {k: [_format_value(v)] for k, v in raw_inputs.items()},
                    "current_outputs": list(prompt),
                },
                False,
            )
            result.status_str, result.completed = "error", False
            return result
        finally:
            self.last_node_id = None
        await self._message(messages, "execution_success", {"prompt_id": pid}, False)
        return result

    @staticmethod
    def _record_ui(result: RunResult, node_id: str, ui: dict[str, Any]) -> None:
        result.outputs[node_id] = ui
        result.meta[node_id] = {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }

    async def _apply_node_faults(self, node_id: str) -> None:
        faults = self.emu.faults
        if faults.crash_at_node == node_id:
            raise Crashed
        if faults.drop_ws_at_node == node_id:
            faults.drop_ws_at_node = None
            self.emu.hub.drop(self.client_id)
        if faults.silent_ws_at_node == node_id:
            faults.silent_ws_at_node = None
            faults.silent_ws = True


class _Context:
    """What a node sees of the run: paths, settings, and the progress hook."""

    def __init__(
        self,
        executor: Executor,
        node_id: str,
        class_type: str,
        prompt_id: str,
        progress: dict[str, dict[str, Any]],
        item: QueueItem,
    ) -> None:
        self._executor = executor
        self._progress = progress
        self.node_id, self.class_type, self.prompt_id = node_id, class_type, prompt_id
        emu = executor.emu
        self.install = emu.install
        self.step_delay_s = emu.step_delay_s
        self.video_pad_bytes = emu.faults.video_pad_bytes
        self.prompt = item.prompt
        self.extra_data = item.extra_data

    async def tick(self, value: int, total: int, preview_png: bytes | None = None) -> None:
        ex = self._executor
        ex.check_interrupt()
        self._progress[self.node_id] = ex._state(self.node_id, self.prompt_id, value, total, "running")
        await ex._progress_state(self.prompt_id, self._progress)
        meta = {
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.node_id,
            "parent_node_id": None,
            "real_node_id": self.node_id,
            "image_type": "image/png",
        }
        if preview_png is not None:
            await ex.emu.hub.send_preview(preview_png, meta, ex.client_id, before_progress=True)
        await ex.emu.hub.send(
            "progress",
            {"value": value, "max": total, "prompt_id": self.prompt_id, "node": self.node_id},
            ex.client_id,
        )
        if preview_png is not None:
            await ex.emu.hub.send_preview(preview_png, meta, ex.client_id, before_progress=False)
