"""ComfyUI client: talks to one ComfyUI through its public HTTP + WebSocket API only."""

from app.comfy.client import CancelOutcome, ComfyClient
from app.comfy.errors import (
    ComfyAuthError,
    ComfyError,
    ComfyProtocolError,
    ComfyTimeout,
    ComfyUnavailable,
    DownloadError,
    ErrorKind,
    ExecutionError,
    MissingModelError,
    MissingNodeError,
    NodeError,
    PromptInterrupted,
    PromptLost,
    PromptValidationError,
    classify_execution_error,
)
from app.comfy.frames import FrameExtractionError, extract_last_frame
from app.comfy.outputs import OutputFile, PromptResult, find_outputs
from app.comfy.progress import Progress

__all__ = [
    "CancelOutcome",
    "ComfyAuthError",
    "ComfyClient",
    "ComfyError",
    "ComfyProtocolError",
    "ComfyTimeout",
    "ComfyUnavailable",
    "DownloadError",
    "ErrorKind",
    "ExecutionError",
    "FrameExtractionError",
    "MissingModelError",
    "MissingNodeError",
    "NodeError",
    "OutputFile",
    "Progress",
    "PromptInterrupted",
    "PromptLost",
    "PromptResult",
    "PromptValidationError",
    "classify_execution_error",
    "extract_last_frame",
    "find_outputs",
]
