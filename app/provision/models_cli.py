"""`comfyfleet models mirror`: copy the workflows' model files into the R2 bucket (the model mirror).

Run it once (and again after adding a workflow): every later provisioning downloads the mirrored files
from R2 by presigned URL, with the Hub (or `MODEL_MIRROR_URL`) as the fallback per file. Idempotent: a
file whose object already carries its sha256 is skipped.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer

from app.config import get_settings

models_cli = typer.Typer(help="Model files: the R2 model mirror.", no_args_is_help=True)


def _emit_json(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _human(event: dict[str, Any]) -> None:
    kind, name = event.get("event"), event.get("file", "")
    if kind == "present":
        typer.echo(f"✓ {name}: already in the mirror ({event['bytes'] / 1e6:.1f} MB)")
    elif kind == "start":
        total = event.get("total")
        typer.echo(f"↑ {name}: copying" + (f" ({total / 1e6:.1f} MB)" if total else ""))
    elif kind == "progress":
        total = event.get("total")
        share = f" of {total / 1e6:.1f}" if total else ""
        typer.echo(f"  {name}: {event['bytes'] / 1e6:.1f}{share} MB")
    elif kind == "done":
        secs, mb = max(event["ms"], 1) / 1000, event["bytes"] / 1e6
        typer.echo(f"✓ {name}: copied {mb:.1f} MB in {secs:.1f} s ({mb / secs:.1f} MB/s)")
    elif kind == "error":
        typer.echo(f"✗ {event.get('message')}", err=True)


async def _mirror(names: list[str], check_only: bool, json_out: bool) -> None:
    from app.errors import ConfigError
    from app.provision.mirror import MirrorError, mirror_key, mirror_models, r2_configured
    from app.provision.plan import build_plan
    from app.store.r2 import R2Store
    from app.workflows import get_workflow, load_workflows

    settings = get_settings()
    if not r2_configured(settings):
        raise ConfigError(
            "the model mirror lives in R2: set R2_BUCKET, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY and "
            "R2_ACCOUNT_ID (or R2_ENDPOINT_URL for another S3 server)"
        )
    workflows = (
        [get_workflow(n, settings) for n in names] if names else list(load_workflows(settings).values())
    )
    models = []
    for workflow in workflows:  # exact sizes and sha256 from the source (HEAD) or the lock file
        models += (await build_plan(workflow, settings)).models
    emit = _emit_json if json_out else _human
    store = R2Store.from_settings(settings)
    try:
        await store.check()
        if check_only:
            missing = 0
            for m in {(m.folder, m.name): m for m in models}.values():
                key = mirror_key(settings.model_r2_prefix, m.folder, m.name)
                obj = await store.head(key)
                sha = obj.metadata.get("sha256") if obj else None
                ok = obj is not None and bool(sha) and (m.sha256 is None or sha == m.sha256)
                missing += not ok
                state = "present" if ok else ("stale" if obj else "missing")
                emit(
                    {
                        "event": state,
                        "file": m.name,
                        "folder": m.folder,
                        "key": key,
                        "bytes": obj.size if obj else 0,
                    }
                )
            if missing:
                raise MirrorError(
                    "", f"{missing} model file(s) are not in the mirror: run `comfyfleet models mirror`"
                )
            return
        outcomes = await mirror_models(models, settings, store, on_event=emit)
    finally:
        await store.close()
    failed = [o for o in outcomes if o.status == "failed"]
    copied = [o for o in outcomes if o.status == "copied"]
    summary = {
        "event": "summary",
        "ok": not failed,
        "copied": len(copied),
        "present": sum(1 for o in outcomes if o.status == "present"),
        "failed": len(failed),
        "bytes": sum(o.size for o in copied),
        "bucket": settings.r2_bucket,
        "prefix": settings.model_r2_prefix,
    }
    if json_out:
        emit(summary)
    else:
        typer.echo(
            f"mirror {settings.r2_bucket}/{settings.model_r2_prefix}: {summary['copied']} copied "
            f"({summary['bytes'] / 1e6:.1f} MB), {summary['present']} already there, "
            f"{summary['failed']} failed"
        )
    if failed:
        names_failed = ", ".join(o.name for o in failed)
        raise MirrorError(
            failed[0].name, f"{len(failed)} model file(s) could not be mirrored: {names_failed}"
        )


@models_cli.command("mirror")
def mirror_command(
    workflow: Annotated[
        list[str] | None, typer.Option("--workflow", help="only this workflow (repeatable); default: all")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="only report what the mirror holds")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print events as JSON lines")] = False,
) -> None:
    """Copy every model file of the workflows from the Hub into the R2 bucket (skipped when present)."""
    asyncio.run(_mirror(list(workflow or []), check, json_out))


def register(cli: typer.Typer) -> None:
    cli.add_typer(models_cli, name="models")
