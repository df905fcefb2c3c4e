"""Typed provisioning failures, each with a message a user can act on.

The remote script's exit codes map one-to-one onto these (see `provisioning/provision.sh`), so the job
runner can decide by type: retry the same instance (`retryable`), replace it, or fail the job.
"""

from __future__ import annotations

from app.errors import ComfyfleetError


class ProvisionError(ComfyfleetError):
    """Provisioning did not complete."""


class DiskFull(ProvisionError):
    """The instance has too little free disk for the models; a bigger disk (or another instance) is needed.

    `file` names the model being written when the disk filled up mid-download (None for the up-front check).
    """

    def __init__(self, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


class DownloadFailed(ProvisionError):
    """A model could not be downloaded (network, 404, server errors). `file` names it."""

    def __init__(self, file: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)
        self.file = file


class VerificationFailed(ProvisionError):
    """A model downloaded twice and failed size/hash/header checks both times. `file` names it."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(message)
        self.file = file


class NeedsHFToken(ProvisionError):
    """A gated model answered 401/403: set HF_TOKEN (with access to that repo)."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(message)
        self.file = file


class UpstreamChanged(ProvisionError):
    """A model's source now has a different sha256 than the lock file recorded."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(message)
        self.file = file


class NodeInstallFailed(ProvisionError):
    """A custom node could not be cloned, checked out at its commit, or its requirements installed."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node


class ComfyRestartFailed(ProvisionError):
    """ComfyUI did not come back after the restart that loads new custom nodes."""

    retryable = True


class MissingTool(ProvisionError):
    """The instance lacks a tool the script needs (curl/wget, git)."""


class ProvisionBusy(ProvisionError):
    """Another provisioning run holds the instance's lock."""

    retryable = True


class ProvisionTimeout(ProvisionError):
    """Provisioning did not finish before its deadline; the remote run was stopped."""

    retryable = True


class HostKeyMismatch(ProvisionError):
    """The host presented a different SSH host key than the one pinned for it. Never accepted silently."""


class SSHUnavailable(ProvisionError):
    """SSH could not be reached or the connection dropped; the instance may still be starting."""

    retryable = True


class SSHAuthFailed(ProvisionError):
    """The SSH key was refused. On Vast.ai keys attach late, so this is retryable for a while."""

    retryable = True


class ImageBootTimeout(ProvisionError):
    """The image did not finish its own boot (ComfyUI copied into the workspace, its provisioning marker
    gone) within COMFY_BOOT_TIMEOUT_S of SSH answering. The host is at fault: replace it."""

    retryable = True
    instance_broken = True


class ComfyNeverStarted(ProvisionError):
    """ComfyUI did not answer within COMFY_START_TIMEOUT_S after provisioning. The instance is marked bad
    (its machine avoided), destroyed, and the job retried once on another machine."""

    retryable = True
    instance_broken = True
