"""Provisioning over SSH: make an instance hold a workflow's models and custom nodes.

Public API: `build_plan` (async), `Plan`, `connect`, `run_provision`, `ProvisionSummary`, `open_tunnel`,
`parse_target`, and the typed errors of `app.provision.errors`.
"""

from app.provision.errors import (
    ComfyRestartFailed,
    DiskFull,
    DownloadFailed,
    HostKeyMismatch,
    MissingTool,
    NeedsHFToken,
    NodeInstallFailed,
    ProvisionBusy,
    ProvisionError,
    ProvisionTimeout,
    SSHAuthFailed,
    SSHUnavailable,
    UpstreamChanged,
    VerificationFailed,
)
from app.provision.plan import Plan, PlannedModel, PlannedNode, build_plan
from app.provision.runner import ProvisionSummary, run_provision
from app.provision.ssh import connect, host_key_line, open_tunnel, parse_target

__all__ = [
    "ComfyRestartFailed",
    "DiskFull",
    "DownloadFailed",
    "HostKeyMismatch",
    "MissingTool",
    "NeedsHFToken",
    "NodeInstallFailed",
    "Plan",
    "PlannedModel",
    "PlannedNode",
    "ProvisionBusy",
    "ProvisionError",
    "ProvisionSummary",
    "ProvisionTimeout",
    "SSHAuthFailed",
    "SSHUnavailable",
    "UpstreamChanged",
    "VerificationFailed",
    "build_plan",
    "connect",
    "host_key_line",
    "open_tunnel",
    "parse_target",
    "run_provision",
]
