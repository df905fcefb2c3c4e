"""`comfyfleet instances ...`: see, rent and destroy our Vast.ai instances by hand.

Every command goes through the same `VastProvider` as the service (same labels, same ledger), so a GPU
rented here is tracked, reconciled and cleaned up exactly like one rented by a job. Human tables by
default, `--json` for scripts; the ComfyUI token is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from app.config import Settings, get_settings
from app.errors import ComfyfleetError, ValidationError
from app.pool.provider import CreateRequest, Instance, InstanceState
from app.redact import redact
from app.vast.factory import open_provider
from app.vast.offers import disk_gb_for, explain
from app.vast.provider import VastProvider, ssh_target_of
from app.workflows import get_workflow

DEFAULT_MODEL_BYTES = 26e9  # Wan 2.2 i2v set, when the workflow room cannot tell us

instances = typer.Typer(
    help="Our Vast.ai instances: list, offers, create, destroy, logs, ssh.", no_args_is_help=True
)


def register(cli: typer.Typer) -> None:
    cli.add_typer(instances, name="instances")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _request(settings: Settings, workflow: str | None) -> CreateRequest:
    name = workflow or settings.default_workflow
    model_bytes = DEFAULT_MODEL_BYTES
    try:
        with contextlib.suppress(AttributeError, OSError, ValueError, TypeError):
            model_bytes = float(get_workflow(name, settings).disk_bytes) or DEFAULT_MODEL_BYTES
    except ValidationError:  # an unknown workflow: an error when asked for by name, else the default size
        if workflow:
            raise
    return CreateRequest(
        workflow=name, disk_gb=disk_gb_for(model_bytes, settings), min_gpu_ram_gb=settings.vast_min_gpu_ram_gb
    )


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _row(inst: Instance, now: float) -> dict[str, Any]:
    return {
        "id": inst.id,
        "label": inst.label,
        "state": str(inst.state),
        "vast_status": inst.meta.get("vast_status"),
        "gpu_name": inst.gpu_name,
        "machine_id": inst.machine_id,
        "price_per_hour": round(inst.price_per_hour, 4),
        "age_s": round(now - inst.created_at, 1),
        "spent_usd": round(inst.spent_usd(now), 4),
        "ssh": str(inst.ssh) if inst.ssh else None,
        "orphan": bool(inst.meta.get("orphan")),
        "simulated": inst.simulated,
        "status_msg": redact(inst.status_msg or "") or None,
    }


def _console() -> Console:
    """Rich console; wide when output is not a terminal, so ids and labels are never wrapped."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _echo_json(data: Any) -> None:
    typer.echo(redact(json.dumps(data, indent=2, default=str)))


def _confirm(question: str, yes: bool) -> None:
    if not yes and not typer.confirm(question, default=False):
        raise typer.Exit(1)


@instances.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """Our instances (reconciled with the ledger first): state, age, $/h, money spent so far."""
    settings = get_settings()

    async def go() -> tuple[list[Instance], Any]:
        async with open_provider(settings) as provider:
            report = await provider.reconcile()
            return await provider.list(), report

    found, report = _run(go())
    now = time.time()
    rows = [_row(i, now) for i in found]
    if as_json:
        _echo_json(
            {
                "instances": rows,
                "orphans": [i.id for i in report.orphans],
                "vanished": [i.label for i in report.vanished],
                "total_per_hour": round(sum(i.price_per_hour for i in found if i.alive), 4),
                "simulated": settings.simulated,
            }
        )
        return
    table = Table(title=f"comfyfleet instances ({settings.deployment})")
    for col in ("id", "label", "state", "vast", "gpu", "$/h", "age", "spent $", "ssh"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["id"],
            r["label"] + (" [orphan]" if r["orphan"] else ""),
            r["state"],
            str(r["vast_status"] or "-"),
            str(r["gpu_name"] or "-"),
            f"{r['price_per_hour']:.3f}",
            _age(r["age_s"]),
            f"{r['spent_usd']:.3f}",
            r["ssh"] or "-",
        )
    console = _console()
    console.print(table)
    console.print(
        f"{len(rows)} instance(s), ${sum(r['price_per_hour'] for r in rows):.3f}/h total"
        + (f"; {len(report.vanished)} ledger row(s) marked destroyed" if report.vanished else "")
    )


@instances.command("offers")
def offers_cmd(
    workflow: str | None = typer.Option(
        None, help="Workflow whose models must fit (default: DEFAULT_WORKFLOW)"
    ),
    limit: int = typer.Option(10, help="How many ranked offers to show"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What would be rented and why: qualifying offers ranked by expected cost per clip."""
    settings = get_settings()
    request = _request(settings, workflow)

    async def go() -> tuple[list[Any], dict[str, Any]]:
        async with open_provider(settings) as provider:
            return await provider.search(request), provider.last_search

    ranked, stats = _run(go())
    ranked = ranked[:limit]
    rows = [r.summary() for r in ranked]
    if as_json:
        _echo_json(
            {
                "request": {"workflow": request.workflow, "disk_gb": request.disk_gb},
                "search": stats,
                "offers": rows,
            }
        )
        return
    table = Table(title=f"offers for {request.workflow} (disk {request.disk_gb:.0f} GB), best first")
    for col in (
        "#",
        "offer",
        "machine",
        "gpu",
        "$/h",
        "Mb/s",
        "reliab.",
        "where",
        "cold s",
        "clip s",
        "$/clip",
    ):
        table.add_column(col)
    for i, r in enumerate(rows, 1):
        table.add_row(
            str(i),
            str(r["offer_id"]),
            r["machine_id"],
            str(r["gpu_name"]),
            f"{r['price_per_hour']:.3f}",
            f"{float(r['inet_down_mbps'] or 0):.0f}",
            f"{float(r['reliability'] or 0):.3f}",
            str(r["geolocation"] or "-"),
            f"{r['cold_start_s']:.0f}",
            f"{r['clip_s']:.0f}",
            f"{r['cost_per_clip_usd']:.4f}",
        )
    _console().print(table)
    typer.echo(
        f"{stats.get('returned', 0)} offers returned, {stats.get('qualifying', 0)} qualify; rejected by "
        + (", ".join(f"{k} x{v}" for k, v in sorted(stats.get("rejected", {}).items())) or "nothing")
    )
    if ranked:
        typer.echo("why: " + explain(ranked))
    if not rows:
        typer.echo("no offer matches; loosen VAST_MAX_PRICE_PER_HOUR, VAST_GPU_NAMES, VAST_REGIONS, ...")


@instances.command("create")
def create_cmd(
    workflow: str | None = typer.Option(None, help="Workflow whose models must fit"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until SSH answers"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rent one instance (the best-ranked offer), recorded in the ledger like any other."""
    settings = get_settings()
    request = _request(settings, workflow)
    _confirm(
        f"Rent a Vast.ai GPU (up to ${settings.vast_max_price_per_hour:.2f}/h) for {request.workflow}?", yes
    )

    async def go() -> Instance:
        async with open_provider(settings) as provider:
            if wait:
                return await provider.acquire(request, time.monotonic() + settings.instance_ready_timeout_s)
            return await provider.create(request)

    inst = _run(go())
    row = _row(inst, time.time())
    if as_json:
        _echo_json(row)
    else:
        typer.echo(
            f"created {inst.id} ({inst.label}) {inst.gpu_name} ${inst.price_per_hour:.3f}/h"
            f" state {inst.state}" + (f" ssh {inst.ssh}" if inst.ssh else "")
        )


async def _resolve(provider: VastProvider, ident: str) -> tuple[Instance, dict[str, Any] | None]:
    """An instance by Vast id or label: the ledger row when there is one, else what Vast shows."""
    known = await provider.ledger.by_label(ident) or await provider.ledger.get(ident)
    instance_id = known.id if known else ident
    info = None
    if instance_id and instance_id.isdigit():
        info = await provider.client.show_instance(instance_id)
    if known is None:
        if info is None:
            raise ComfyfleetError(f"no instance {ident!r} on Vast.ai or in the ledger")
        known = Instance(provider="vast", id=str(info["id"]), label=str(info.get("label") or ""))
    return known, info


def _need_id(inst: Instance) -> str:
    if not inst.id:
        raise ComfyfleetError(f"{inst.label} has no Vast.ai id yet (create in flight); run `instances list`")
    return inst.id


@instances.command("destroy")
def destroy_cmd(
    ident: str | None = typer.Argument(None, help="Instance id or label"),
    all_ours: bool = typer.Option(False, "--all-ours", help="Destroy every instance labelled as ours"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    force: bool = typer.Option(False, "--force", help="Allow destroying an instance not labelled as ours"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Destroy one instance, or all of ours (asks first unless --yes). Already gone counts as done."""
    if bool(ident) == all_ours:
        raise ComfyfleetError("give an instance id, or --all-ours")
    settings = get_settings()

    async def targets(provider: VastProvider) -> list[Instance]:
        if all_ours:
            await provider.reconcile()
            return [i for i in await provider.list() if i.state != InstanceState.DESTROYED]
        inst, info = await _resolve(provider, str(ident))
        label = (info or {}).get("label") or inst.label
        if not provider.is_ours(label) and not force:
            raise ComfyfleetError(f"instance {inst.id} is not labelled {provider.label_prefix}*; use --force")
        return [inst]

    async def go() -> list[Instance]:
        async with open_provider(settings) as provider:
            chosen = await targets(provider)
            if not chosen:
                return []
            if not yes:
                names = ", ".join(f"{i.id} ({i.label})" for i in chosen)
                # typer.confirm is blocking; fine here (nothing else runs in this loop).
                if not typer.confirm(f"Destroy {len(chosen)} instance(s): {names}?", default=False):
                    raise typer.Exit(1)
            for inst in chosen:
                await provider.destroy(inst)
            return chosen

    done = _run(go())
    if as_json:
        _echo_json({"destroyed": [i.id for i in done]})
    else:
        typer.echo(
            f"destroyed {len(done)} instance(s)" + (": " + ", ".join(i.id for i in done) if done else "")
        )


@instances.command("logs")
def logs_cmd(
    ident: str = typer.Argument(..., help="Instance id or label"),
    tail: int = typer.Option(1000, help="Last N lines"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The container's logs (Vast uploads them, we fetch the result URL)."""
    settings = get_settings()

    async def go() -> tuple[Instance, str]:
        async with open_provider(settings) as provider:
            inst, _ = await _resolve(provider, ident)
            return inst, await provider.client.request_logs(_need_id(inst), tail=tail)

    inst, text = _run(go())
    if as_json:
        _echo_json({"id": inst.id, "logs": text})
    else:
        typer.echo(redact(text), nl=False)


@instances.command("ssh")
def ssh_cmd(
    ident: str = typer.Argument(..., help="Instance id or label"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the ssh command for an instance (with the ComfyUI tunnel when access is via tunnel)."""
    settings = get_settings()

    async def go() -> tuple[Instance, dict[str, Any] | None]:
        async with open_provider(settings) as provider:
            return await _resolve(provider, ident)

    inst, info = _run(go())
    target = ssh_target_of(info) if info else inst.ssh
    if target is None:
        raise ComfyfleetError(
            f"instance {inst.id} has no SSH address yet (status {(info or {}).get('actual_status')})"
        )
    argv = [
        "ssh",
        "-i",
        str(settings.effective_ssh_key_path),
        "-p",
        str(target.port),
        "-o",
        "StrictHostKeyChecking=accept-new",
    ]
    if settings.comfy_access == "tunnel":
        port = settings.comfy_internal_port
        argv += ["-L", f"{port}:127.0.0.1:{port}"]
    argv.append(f"{target.user}@{target.host}")
    command = shlex.join(argv)
    if as_json:
        _echo_json(
            {"id": inst.id, "host": target.host, "port": target.port, "user": target.user, "command": command}
        )
    else:
        typer.echo(command)


@instances.command("hosts")
def hosts_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output")) -> None:
    """What finished jobs taught us about hosts: s/step, s/frame and download Mb/s per machine, against
    its GPU model's median; slow ones (HOST_SLOW_FACTOR x the median) are not rented again."""
    from app.db import init_db, make_engine, make_sessionmaker
    from app.pool.hosts import HostBook

    settings = get_settings()

    async def go() -> list[dict[str, Any]]:
        engine = make_engine(settings.effective_database_url)
        try:
            await init_db(engine)
            return await HostBook(make_sessionmaker(engine), slow_factor=settings.host_slow_factor).report()
        finally:
            await engine.dispose()

    rows = _run(go())
    if as_json:
        _echo_json({"hosts": rows, "slow_factor": settings.host_slow_factor, "simulated": settings.simulated})
        return
    if not rows:
        typer.echo("no finished jobs yet: nothing learnt about hosts")
        return
    table = Table(
        title=f"hosts (slow: more than {settings.host_slow_factor:g}x its GPU model's median time per step, "
        "frame and megapixel)"
    )
    for col in (
        "machine",
        "GPU",
        "jobs",
        "s/step",
        "s/frame",
        "GPU median s/step",
        "x median",
        "Mb/s",
        "slow",
    ):
        table.add_column(col)

    def fmt(v: Any, spec: str = ".3f") -> str:
        return "-" if v is None else format(v, spec)

    for r in rows:
        table.add_row(
            r["machine_id"],
            r["gpu_name"] or "?",
            str(r["samples"]),
            fmt(r["s_per_step"]),
            fmt(r["s_per_frame"]),
            fmt(r["ratio"], ".2f"),
            fmt(r["download_mbps"], ".0f"),
            "SLOW" if r["slow"] else "",
        )
    _console().print(table)
