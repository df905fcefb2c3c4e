"""`comfyfleet workflow list|render|check`: inspect workflows and print the exact graph a job would submit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from app.config import get_settings
from app.errors import ValidationError
from app.workflows.params import request_from_cli

workflow_cli = typer.Typer(
    name="workflow", help="Workflows (ComfyUI API graph + manifest).", no_args_is_help=True
)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


@workflow_cli.command("list")
def list_workflows(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the shipped workflows and those in WORKFLOWS_DIR."""
    from app.workflows import load_workflows

    workflows = load_workflows(get_settings())
    if as_json:
        typer.echo(json.dumps([wf.summary() for wf in workflows.values()], indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "version", "source", "models", "disk", "custom nodes", "description")
    for wf in workflows.values():
        table.add_row(
            wf.name,
            wf.version,
            wf.source,
            str(len(wf.models)),
            _gb(wf.disk_bytes),
            ", ".join(f"{c.name}@{c.commit}" for c in wf.custom_nodes) or "-",
            wf.description,
        )
    Console(width=200).print(table)


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValidationError("image_size", f"must be WIDTHxHEIGHT, e.g. 1920x1080 (got {text!r})") from None
    return w, h


@workflow_cli.command("render")
def render(
    name: str = typer.Argument(..., help="Workflow name (see `comfyfleet workflow list`)."),
    prompt: str = typer.Option(..., "--prompt", help="What should happen in the video."),
    image_name: str = typer.Option(..., "--image-name", help="Name of the uploaded image in ComfyUI input/."),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt"),
    frames: str | None = typer.Option(None, "--frames", help="num_frames (4n+1)."),
    width: str | None = typer.Option(None, "--width"),
    height: str | None = typer.Option(None, "--height"),
    steps: str | None = typer.Option(None, "--steps"),
    cfg: str | None = typer.Option(None, "--cfg", help="cfg_scale."),
    seed: str | None = typer.Option(None, "--seed", help="-1 = random."),
    fps: str | None = typer.Option(None, "--fps"),
    image_size: str | None = typer.Option(
        None, "--image-size", help="WIDTHxHEIGHT of the image: default width/height follow its aspect."
    ),
    filename_prefix: str = typer.Option(
        "comfyfleet/render", "--filename-prefix", help="SaveVideo filename prefix."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print {workflow, version, graph_sha256, params, prompt} instead of the bare graph.",
    ),
) -> None:
    """Validate parameters and print the ComfyUI API graph (JSON) a job would submit."""
    from app.workflows import get_workflow

    wf = get_workflow(name, get_settings())
    raw = request_from_cli(
        prompt=prompt,
        negative_prompt=negative_prompt,
        frames=frames,
        width=width,
        height=height,
        steps=steps,
        cfg=cfg,
        seed=seed,
        fps=fps,
    )
    params = wf.validate(raw, _parse_size(image_size)).with_resolved_seed()
    graph = wf.render(params, image_name=image_name, filename_prefix=filename_prefix)
    if as_json:
        out: Any = {
            "workflow": wf.name,
            "version": wf.version,
            "graph_sha256": wf.graph_sha256,
            "params": params.normalized(),
            "prompt": graph,
        }
    else:
        out = graph
    typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


@workflow_cli.command("check")
def check(
    name: str = typer.Argument(..., help="Workflow name."),
    object_info: Path = typer.Option(
        ..., "--object-info", help="A saved GET /object_info JSON of the server."
    ),
    image_name: str = typer.Option(
        "comfyfleet_check.png", "--image-name", help="Input image name to check with."
    ),
) -> None:
    """Render with default parameters and validate against a server's node schemas, as ComfyUI would."""
    from app.comfy.graph_check import files_in_combo_lists, validate_prompt
    from app.workflows import get_workflow

    wf = get_workflow(name, get_settings())
    try:
        info = json.loads(object_info.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError("object_info", f"cannot read {object_info}: {exc}") from None
    params = wf.validate({"prompt": "check"}).with_resolved_seed()
    graph = wf.render(params, image_name=image_name, filename_prefix="comfyfleet/check")
    in_lists = files_in_combo_lists(info)
    result = validate_prompt(
        graph, info, file_exists=lambda class_type, value: value == image_name or in_lists(class_type, value)
    )
    if result.ok and not result.node_errors:
        typer.echo(f"{wf.name}: accepted (outputs {', '.join(result.outputs)})")
        return
    typer.echo(json.dumps(result.response_body("-", 0), indent=2, ensure_ascii=False))
    raise typer.Exit(1)


def register(cli: typer.Typer) -> None:
    cli.add_typer(workflow_cli, name="workflow")
