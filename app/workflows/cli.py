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

    table = Table("name", "inputs", "version", "source", "models", "disk", "custom nodes", "description")
    for wf in workflows.values():
        table.add_row(
            wf.name,
            wf.inputs.describe(),
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
    image_name: str | None = typer.Option(
        None, "--image-name", help="Name of the uploaded start image in ComfyUI input/ (image workflows)."
    ),
    end_image_name: str | None = typer.Option(
        None, "--end-image-name", help="Name of the uploaded last-frame image (first-last-frame workflows)."
    ),
    audio_name: str | None = typer.Option(None, "--audio-name", help="Name of the uploaded audio (S2V)."),
    audio_seconds: float | None = typer.Option(
        None, "--audio-seconds", help="The audio's length: S2V builds as many chunks as it needs."
    ),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt"),
    frames: str | None = typer.Option(None, "--frames", help="num_frames (4n+1)."),
    width: str | None = typer.Option(None, "--width"),
    height: str | None = typer.Option(None, "--height"),
    steps: str | None = typer.Option(None, "--steps"),
    cfg: str | None = typer.Option(None, "--cfg", help="cfg_scale."),
    seed: str | None = typer.Option(None, "--seed", help="-1 = random."),
    fps: str | None = typer.Option(None, "--fps"),
    crf: str | None = typer.Option(None, "--crf", help="Encoder CRF (default 18)."),
    output_format: str | None = typer.Option(None, "--output-format", help="mp4 (H.264) or webm (VP9)."),
    camera_motion: str | None = typer.Option(
        None, "--camera-motion", help="e.g. pan_left, dolly_in, static."
    ),
    quality_preset: str | None = typer.Option(None, "--quality-preset", help="draft, standard, high, ultra."),
    enhance_prompt: bool = typer.Option(
        False, "--enhance-prompt", help="Restructure the prompt (local rules)."
    ),
    image_size: str | None = typer.Option(
        None, "--image-size", help="WIDTHxHEIGHT of the image: default width/height follow its aspect."
    ),
    filename_prefix: str = typer.Option(
        "comfyfleet/render", "--filename-prefix", help="SaveVideo filename prefix."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print {workflow, version, graph_sha256, params, applied, prompt} instead of the bare graph.",
    ),
) -> None:
    """Validate parameters and print the ComfyUI API graph (JSON) a job would submit."""
    import asyncio

    from app.workflows import get_workflow
    from app.workflows.enhance import enhance
    from app.workflows.plan import enhancement_inputs, plan_request

    settings = get_settings()
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
        crf=crf,
        output_format=output_format,
        camera_motion=camera_motion,
        quality_preset=quality_preset,
        enhance_prompt=enhance_prompt,
    )
    names = {"image": image_name, "end_image": end_image_name, "audio": audio_name}
    given = {k: f"--{k.replace('_', '-')}-name" for k, v in names.items() if v is not None}
    if audio_name is not None and audio_seconds is None:
        raise ValidationError("--audio-seconds", "give the audio's length with --audio-name")

    def lookup(n: str) -> Any:
        return get_workflow(n, settings)

    size = _parse_size(image_size) or ((832, 480) if image_name is not None else None)
    kw: dict[str, Any] = {"given": given, "image_size": size, "audio_seconds": audio_seconds}
    plan = plan_request(lookup, name, raw, **kw)
    if enhance_prompt:  # local rules only: rendering never calls a network service
        phrase, aesthetic = enhancement_inputs(plan)
        result = asyncio.run(enhance(prompt, camera_phrase=phrase, aesthetic=aesthetic))
        plan = plan_request(lookup, name, raw, enhanced_prompt=result.prompt, enhanced_by=result.by, **kw)
    wf, params = plan.workflow, plan.params.with_resolved_seed()
    graph = wf.render(
        params,
        image_name,
        filename_prefix,
        end_image_name=end_image_name,
        audio_name=audio_name,
        audio_seconds=plan.audio_seconds,
        camera_pose=plan.camera_pose,
    )
    if as_json:
        out: Any = {
            "workflow": wf.name,
            "version": wf.version,
            "graph_sha256": wf.graph_sha256,
            "params": params.normalized(),
            "applied": plan.applied,
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
    uploads = {
        "end_image_name": "comfyfleet_check_end.png" if wf.inputs.end_image.required else None,
        "audio_name": "comfyfleet_check.mp3" if wf.inputs.audio.required else None,
    }
    graph = wf.render(
        params,
        image_name=image_name if wf.inputs.image.required else None,
        filename_prefix="comfyfleet/check",
        audio_seconds=5.0 if wf.inputs.audio.required else None,
        **uploads,
    )
    in_lists = files_in_combo_lists(info)
    ours = {image_name, *(v for v in uploads.values() if v)}
    result = validate_prompt(
        graph, info, file_exists=lambda class_type, value: value in ours or in_lists(class_type, value)
    )
    if result.ok and not result.node_errors:
        typer.echo(f"{wf.name}: accepted (outputs {', '.join(result.outputs)})")
        return
    typer.echo(json.dumps(result.response_body("-", 0), indent=2, ensure_ascii=False))
    raise typer.Exit(1)


def register(cli: typer.Typer) -> None:
    cli.add_typer(workflow_cli, name="workflow")
