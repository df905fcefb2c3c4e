"""Typed errors of the ComfyUI client, and the pure functions that classify execution failures.

The job runner decides what to do with an instance from these types alone: retry elsewhere
(`retryable`), free VRAM and keep the instance (`ErrorKind.OOM`), replace the instance
(`ErrorKind.DEVICE_FAULT`), or re-provision its model files (`ErrorKind.MODEL_CORRUPT`). Messages name
what the user or operator has to fix (node id, node type, file, folder).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.errors import ComfyfleetError


class ComfyError(ComfyfleetError):
    """Base of every ComfyUI client error."""


class ComfyUnavailable(ComfyError):
    """ComfyUI cannot be reached (booting, crashed, tunnel down). Trying again later may work."""

    retryable = True


class ComfyAuthError(ComfyError):
    """The proxy in front of ComfyUI refused our credentials (401/403). Fix the token or password."""


class ComfyProtocolError(ComfyError):
    """ComfyUI answered something this client does not understand (unexpected status or body)."""


class PromptLost(ComfyUnavailable):
    """The prompt is in neither /queue nor /history: ComfyUI restarted or crashed while it ran."""


class ComfyTimeout(ComfyError):
    """The per-job deadline passed before ComfyUI finished the prompt (the prompt was cancelled)."""


class PromptInterrupted(ComfyError):
    """The prompt was interrupted or removed from the queue before it finished."""

    def __init__(
        self,
        prompt_id: str,
        message: str | None = None,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
    ) -> None:
        super().__init__(message or f"prompt {prompt_id} was interrupted")
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type


class DownloadError(ComfyError):
    """An output could not be downloaded completely (short read, missing file)."""

    retryable = True


class MissingNodeError(ComfyError):
    """Node types the graph needs are not installed (custom node missing or failed to import)."""

    def __init__(self, node_types: Iterable[str], providers: Mapping[str, str] | None = None) -> None:
        self.node_types = sorted(set(node_types))
        self.providers = {t: providers[t] for t in self.node_types if providers and t in providers}
        parts = []
        for t in self.node_types:
            hint = f" (provided by custom node {self.providers[t]})" if t in self.providers else ""
            parts.append(f"{t}{hint}")
        super().__init__(
            "ComfyUI is missing node type(s): "
            + ", ".join(parts)
            + ". Install the custom node(s) and restart ComfyUI."
        )


class MissingModelError(ComfyError):
    """Model files the graph needs are not where ComfyUI looks for them."""

    def __init__(self, missing: Iterable[tuple[str, str]]) -> None:
        self.missing = sorted(set(missing))  # (folder, file name)
        listed = ", ".join(f"models/{folder}/{name}" for folder, name in self.missing)
        super().__init__(f"ComfyUI is missing model file(s): {listed}. Provision them and retry.")


@dataclass(frozen=True)
class NodeError:
    """One entry of a 400 answer's node_errors, flattened."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str
    input_name: str | None = None


class PromptValidationError(ComfyError):
    """ComfyUI rejected the graph (HTTP 400, or a 200 that dropped an invalid output branch)."""

    def __init__(self, error: Mapping[str, Any] | None, node_errors: Mapping[str, Any] | None) -> None:
        self.error = dict(error or {})
        self.raw_node_errors = dict(node_errors or {})
        self.node_errors = parse_node_errors(self.raw_node_errors)
        self.error_type = str(self.error.get("type", ""))
        super().__init__(_validation_message(self.error, self.node_errors))


def parse_node_errors(node_errors: Mapping[str, Any]) -> list[NodeError]:
    out: list[NodeError] = []
    for node_id, entry in node_errors.items():
        if not isinstance(entry, Mapping):
            continue
        class_type = str(entry.get("class_type", ""))
        for err in entry.get("errors") or []:
            extra = err.get("extra_info") or {}
            out.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=class_type,
                    type=str(err.get("type", "")),
                    message=str(err.get("message", "")),
                    details=str(err.get("details", "")),
                    input_name=extra.get("input_name") if isinstance(extra, Mapping) else None,
                )
            )
    return out


def _validation_message(error: Mapping[str, Any], node_errors: list[NodeError]) -> str:
    if node_errors:
        shown = "; ".join(
            f"node {e.node_id} ({e.class_type}): {e.message}" + (f": {e.details}" if e.details else "")
            for e in node_errors[:5]
        )
        more = f" (+{len(node_errors) - 5} more)" if len(node_errors) > 5 else ""
        return f"ComfyUI rejected the prompt: {shown}{more}"
    msg = str(error.get("message") or "invalid prompt")
    details = str(error.get("details") or "")
    return f"ComfyUI rejected the prompt: {msg}" + (f" ({details})" if details else "")


class ErrorKind(StrEnum):
    """What an execution failure says about the instance, not just the job."""

    OOM = "oom"  # recoverable: POST /free, fail the job, keep the instance
    DEVICE_FAULT = "device_fault"  # CUDA context is poisoned: replace the instance
    MODEL_CORRUPT = "model_corrupt"  # a model file is truncated or wrong: re-provision it
    WORKFLOW = "workflow"  # anything else: the job fails, the instance is fine


_OOM = re.compile(
    r"out of memory|outofmemoryerror|allocation on device|cudaErrorMemoryAllocation"
    r"|CUBLAS_STATUS_ALLOC_FAILED|not enough memory|DefaultCPUAllocator: can't allocate",
    re.IGNORECASE,
)
_DEVICE = re.compile(
    r"illegal memory access|device-side assert|unspecified launch failure|misaligned address"
    r"|illegal instruction|uncorrectable ECC|CUBLAS_STATUS_EXECUTION_FAILED|CUDNN_STATUS_EXECUTION_FAILED"
    r"|cudaErrorLaunchFailure|CUDA error: unknown error|GPU is lost|no CUDA-capable device"
    r"|CUDA driver version is insufficient|launch timed out",
    re.IGNORECASE,
)
_MODEL = re.compile(
    r"GGUF magic invalid|header too large|HeaderTooLarge|MetadataIncompleteBuffer|incomplete metadata"
    r"|Error while deserializing header|invalid load key|failed finding central directory"
    r"|PytorchStreamReader failed|unexpected EOF|file not fully covered|not a valid GGUF",
    re.IGNORECASE,
)


def is_oom(exception_type: str, message: str) -> bool:
    return bool(_OOM.search(exception_type) or _OOM.search(message))


def is_device_fault(exception_type: str, message: str) -> bool:
    return bool(_DEVICE.search(message))


def is_model_corrupt(exception_type: str, message: str) -> bool:
    return bool(_MODEL.search(message)) or "SafetensorError" in exception_type


def classify_execution_error(exception_type: str, message: str) -> ErrorKind:
    """Device faults win over OOM (an illegal access can mention memory); OOM wins over file errors."""
    if is_device_fault(exception_type, message):
        return ErrorKind.DEVICE_FAULT
    if is_oom(exception_type, message):
        return ErrorKind.OOM
    if is_model_corrupt(exception_type, message):
        return ErrorKind.MODEL_CORRUPT
    return ErrorKind.WORKFLOW


_ACTIONS = {
    ErrorKind.OOM: "free ComfyUI memory (POST /free) and keep the instance",
    ErrorKind.DEVICE_FAULT: "replace the instance (the GPU context is unusable)",
    ErrorKind.MODEL_CORRUPT: "re-provision the model file(s) of this node",
    ErrorKind.WORKFLOW: "fix the workflow or its inputs",
}


class ExecutionError(ComfyError):
    """A node raised while ComfyUI executed the prompt (`execution_error`)."""

    def __init__(
        self,
        node_id: str | None,
        node_type: str | None,
        exception_type: str,
        message: str,
        *,
        prompt_id: str | None = None,
        traceback: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = message.strip()
        self.prompt_id = prompt_id
        self.traceback = list(traceback or [])
        self.kind = classify_execution_error(exception_type, message)
        self.action = _ACTIONS[self.kind]
        super().__init__(
            f"ComfyUI failed at node {node_id} ({node_type}): {exception_type}: {self.exception_message}"
            f" [{self.kind.value}: {self.action}]",
            retryable=self.kind is not ErrorKind.WORKFLOW,
        )

    @classmethod
    def from_event(cls, data: Mapping[str, Any]) -> ExecutionError:
        """Build from an `execution_error` WS message or the same entry in history status.messages."""
        return cls(
            node_id=_opt_str(data.get("node_id")),
            node_type=_opt_str(data.get("node_type")),
            exception_type=str(data.get("exception_type", "")),
            message=str(data.get("exception_message", "")),
            prompt_id=_opt_str(data.get("prompt_id")),
            traceback=[str(x) for x in data.get("traceback") or []],
        )


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)
