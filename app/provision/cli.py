"""`comfyfleet provision`: make any machine reachable over SSH ready for a workflow.

Works the same against a rented instance, a simulated one, or your own GPU box: models and custom nodes
from the workflow's manifest, a rich progress bar (bytes per file) or, with `--json`, the script's event
lines as they arrive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import typer

from app.config import get_settings
from app.errors import ValidationError


def _parse_node_sources(values: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        url, sep2, commit = rest.rpartition("@")
        if not (sep and sep2 and name and url and commit):
            raise ValidationError("node-source", f"expected NAME=GIT_URL@COMMIT, got {value!r}")
        out[name] = (url, commit)
    return out


class _HumanProgress:
    """A rich progress bar per file, fed by the script's events."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=False)
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}

    def _task(self, name: str, total: int | None) -> Any:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total or None)
        return self.tasks[name]

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        name = event.get("file") or event.get("node") or ""
        if kind == "start":
            task = self._task(name, event.get("total"))
            self.progress.update(task, completed=event.get("offset", 0))
        elif kind == "progress":
            self.progress.update(self._task(name, event.get("total")), completed=event["bytes"])
        elif kind == "done":
            task = self._task(name, event.get("bytes"))
            self.progress.update(task, total=event["bytes"], completed=event["bytes"])
        elif kind == "skipped":
            self.console.print(f"[green]✓[/] {name} already present and verified")
        elif kind == "retry":
            self.console.print(
                f"[yellow]↻[/] {name}: {event.get('reason')} (from byte {event.get('offset')})"
            )
        elif kind == "fallback":
            self.console.print(f"[yellow]↻[/] {name}: from its fallback source ({event.get('reason')})")
        elif kind in ("error", "node_error"):
            self.console.print(f"[red]✗[/] {event.get('message')}")
        elif kind == "node_done":
            self.console.print(f"[green]✓[/] custom node {name} at {event.get('commit', '')[:12]}")
        elif kind == "node_skipped":
            self.console.print(f"[green]✓[/] custom node {name} already at {event.get('commit', '')[:12]}")
        elif kind == "restart":
            self.console.print("restarting ComfyUI (custom nodes changed)")
        elif kind == "restart_needed":
            self.console.print("[yellow]custom nodes changed: restart ComfyUI to load them[/]")


async def _provision(
    ssh: str,
    key: Path | None,
    workflow_name: str | None,
    comfy_dir: str | None,
    models_from: str | None,
    host_key: str | None,
    node_sources: dict[str, tuple[str, str]],
    restart_cmd: str | None,
    python: str | None,
    parallel: int | None,
    json_out: bool,
) -> None:
    from app.provision import build_plan, connect, parse_target, run_provision
    from app.provision.mirror import apply_r2_mirror
    from app.workflows import get_workflow

    settings = get_settings()
    workflow = get_workflow(workflow_name or settings.default_workflow, settings)
    plan = await build_plan(
        workflow, settings, mirror_url=models_from, node_sources=node_sources, comfy_dir=comfy_dir
    )
    overrides: dict[str, Any] = {}
    if restart_cmd is not None:
        overrides["restart_cmd"] = restart_cmd or None
    if python:
        overrides["python"] = python
    if parallel:
        overrides["parallel"] = parallel
    plan = dataclasses.replace(plan, **overrides)
    plan = await apply_r2_mirror(plan, settings)  # mirrored files from R2 first, their source as fallback

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def on_host_key(line: str) -> None:
        if json_out:
            emit({"event": "host_key", "host": ssh, "key": line})
        else:
            typer.echo(f"new host key for {ssh} (pin it with --host-key): {line}", err=True)

    target = parse_target(ssh, host_key=host_key)
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    key_path = key or settings.effective_ssh_key_path
    async with await connect(target, key_path, on_new_host_key=on_host_key) as conn:
        if json_out:
            summary = await run_provision(
                conn, plan, emit, hf_token=token, timeout_s=settings.provision_timeout_s
            )
            return
        human = _HumanProgress()
        with human.progress:
            summary = await run_provision(
                conn, plan, human, hf_token=token, timeout_s=settings.provision_timeout_s
            )
    typer.echo(
        f"ready: {len(summary.downloaded)} downloaded ({summary.bytes_downloaded / 1e6:.1f} MB), "
        f"{len(summary.skipped)} already present, {len(summary.nodes_installed)} custom nodes installed, "
        f"{len(summary.nodes_skipped)} unchanged, in {summary.seconds:.1f} s"
    )


def provision_command(
    ssh: str = typer.Option(..., "--ssh", help="root@HOST:PORT of the machine"),
    key: Path | None = typer.Option(None, "--key", help="SSH private key (default: the comfyfleet key)"),
    workflow: str | None = typer.Option(None, "--workflow", help="workflow name (default: DEFAULT_WORKFLOW)"),
    comfy_dir: str | None = typer.Option(
        None, "--comfy-dir", help="ComfyUI dir on the machine (default: COMFY_DIR)"
    ),
    models_from: str | None = typer.Option(
        None,
        "--models-from",
        help="mirror URL: models come from <URL>/<folder>/<file> (default: MODEL_MIRROR_URL)",
    ),
    host_key: str | None = typer.Option(None, "--host-key", help="pin this host key ('ssh-ed25519 AAAA...')"),
    node_source: list[str] = typer.Option(
        [], "--node-source", help="NAME=GIT_URL@COMMIT: take a custom node from elsewhere (repeatable)"
    ),
    restart_cmd: str | None = typer.Option(
        None, "--restart-cmd", help="how to restart ComfyUI after node changes ('' = don't)"
    ),
    python: str | None = typer.Option(None, "--python", help="ComfyUI's Python for pip (default: detected)"),
    parallel: int | None = typer.Option(
        None, "--parallel", help="parallel downloads (default: PROVISION_PARALLEL)"
    ),
    json_out: bool = typer.Option(False, "--json", help="print the event lines as JSON"),
) -> None:
    """Download the workflow's models and install its custom nodes on a machine over SSH."""
    asyncio.run(
        _provision(
            ssh,
            key,
            workflow,
            comfy_dir,
            models_from,
            host_key,
            _parse_node_sources(node_source),
            restart_cmd,
            python,
            parallel,
            json_out,
        )
    )


def register(cli: typer.Typer) -> None:
    from app.provision.models_cli import register as register_models

    cli.command("provision")(provision_command)
    register_models(cli)
