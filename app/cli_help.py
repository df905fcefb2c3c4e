"""Help text for every `comfyfleet` option, applied to the whole command tree in one pass (so options that
rooms add later get it too): flags print as `--json`, not `--json <bool>`; every option shows its default;
the render options (`--frames`, `--cfg`, ...) that default to the workflow's values get a one-line help and
show those values, read from the default workflow's manifest (the one source of defaults)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# CLI option -> API request field (as `app.workflows.params.request_from_cli` maps them)
FIELD_OF_OPTION = {
    "--negative-prompt": "negative_prompt",
    "--frames": "num_frames",
    "--width": "width",
    "--height": "height",
    "--steps": "steps",
    "--cfg": "cfg_scale",
    "--seed": "seed",
    "--fps": "fps",
}
FIELD_HELP = {
    "negative_prompt": "What the video should not show.",
    "num_frames": "Number of frames (4n+1).",
    "width": "Video width in pixels (multiple of 16).",
    "height": "Video height in pixels (multiple of 16).",
    "steps": "Sampler steps.",
    "cfg_scale": "Classifier-free guidance scale.",
    "seed": "Seed; -1 = random (the seed used is printed).",
    "fps": "Frames per second of the MP4.",
}

# Defaults that are not a value: shown as they are
FIELD_DEFAULT = {
    "negative_prompt": "the workflow's",
    "width": "the image's aspect ratio at 480p",
    "height": "the image's aspect ratio at 480p",
}
# Options several commands share, when a command gives them no help of its own
COMMON_HELP = {
    "--workflow": "Workflow name (`comfyfleet workflow list`; default: DEFAULT_WORKFLOW).",
    "--json": "Print machine-readable JSON.",
}


def walk(command: Any) -> Iterator[tuple[str, Any]]:
    """(`"comfyfleet jobs list"`, command) for the command and every subcommand (duck-typed: Typer ships
    its own copy of click, so its classes are not `click.Group`)."""
    stack: list[tuple[str, Any]] = [(command.name or "comfyfleet", command)]
    while stack:
        path, cmd = stack.pop()
        yield path, cmd
        if isinstance(getattr(cmd, "commands", None), dict):
            for name, sub in sorted(cmd.commands.items()):
                stack.append((f"{path} {name}", sub))


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def workflow_defaults() -> dict[str, Any]:
    """The default workflow's parameter defaults ({} if it cannot be loaded: help must always work)."""
    try:
        from app.config import get_settings
        from app.workflows import get_workflow

        settings = get_settings()
        wf = get_workflow(settings.default_workflow, settings)
        return {name: spec.default for name, spec in wf.limits.items() if spec.default is not None}
    except Exception:
        return {}


def _no_type(ctx: Any) -> None:
    return None


def _flag_help_option(cmd: Any) -> None:
    """`--help` is made per context; show it without a type too."""
    make = getattr(cmd, "get_help_option", None)
    if make is None or getattr(make, "_polished", False):
        return

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            option.display_type_rich = _no_type
        return option

    get_help_option._polished = True  # type: ignore[attr-defined]
    cmd.get_help_option = get_help_option


def polish(command: Any, defaults: Mapping[str, Any] | None = None) -> Any:
    """Apply the rules of the module docstring to every option of the tree; returns `command`."""
    defaults = workflow_defaults() if defaults is None else defaults
    for _path, cmd in walk(command):
        _flag_help_option(cmd)
        for param in cmd.params:
            if getattr(param, "param_type_name", "") != "option" or param.hidden:
                continue
            if param.is_flag:
                param.display_type_rich = _no_type  # `--json`, not `--json <bool>`
            field = next((FIELD_OF_OPTION[o] for o in param.opts if o in FIELD_OF_OPTION), None)
            if not param.help:
                param.help = FIELD_HELP.get(field or "") or next(
                    (COMMON_HELP[o] for o in param.opts if o in COMMON_HELP), None
                )
            if param.required:
                continue
            if field in FIELD_DEFAULT and param.default is None:
                param.show_default = FIELD_DEFAULT[field or ""]
            elif field and param.default is None and field in defaults:
                param.show_default = f"workflow's {_short(defaults[field])}"
            elif param.default is not None and not param.show_default:
                param.show_default = True
            elif param.default is None and "default" not in (param.help or "").lower():
                param.show_default = "none"  # not set unless given
    return command
