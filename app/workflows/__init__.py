"""Workflows as data: a ComfyUI API graph plus a manifest, loaded, validated and rendered per job."""

from app.workflows.loader import get_workflow, load_workflows
from app.workflows.manifest import WorkflowError
from app.workflows.model import CustomNode, ModelFile, Workflow
from app.workflows.params import API_FIELDS, ParamSpec, WorkflowParams

__all__ = [
    "API_FIELDS",
    "CustomNode",
    "ModelFile",
    "ParamSpec",
    "Workflow",
    "WorkflowError",
    "WorkflowParams",
    "get_workflow",
    "load_workflows",
]
