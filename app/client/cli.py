"""The CLI's remote mode: commands that drive a deployed comfyfleet server through `AsyncComfyfleet`.

`comfyfleet generate --server URL`, `story`, `batch`, `jobs list|show|watch|cancel`, `fleet
list|show|verify|destroy|spend` and `instances verify`. The server comes from `--server` or
COMFYFLEET_SERVER, the token from `--token` or COMFYFLEET_TOKEN (prefer the variable: a token typed on a
command line stays in shell history and shows in `ps`). Progress bars are the local mode's (`app.bars`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from app.client.aio import AsyncComfyfleet, file_fields
from app.client.errors import ClientError
from app.config import Settings, get_settings
from app.errors import ComfyfleetError
from app.outdir import default_output
from app.redact import register_secret

T = TypeVar("T")

SERVER_HELP = "comfyfleet server URL (default COMFYFLEET_SERVER)"
TOKEN_HELP = "API token (default COMFYFLEET_TOKEN; prefer the variable, it stays out of shell history)"

jobs_app = typer.Typer(help="Jobs on a comfyfleet server: list, show, watch, cancel.", no_args_is_help=True)
fleet_app = typer.Typer(
    help="The server's GPU fleet: instances, their files, destroy (jobs requeued), spend.",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    cli.command("story")(story)
    cli.command("batch")(batch)
    cli.add_typer(jobs_app, name="jobs")
    cli.add_typer(fleet_app, name="fleet")
    from app.vast.cli import instances  # `comfyfleet instances verify ID`, next to the local commands

    instances.command("verify")(verify)


# --- plumbing ------------------------------------------------------------------------------------
def connect(settings: Settings, server: str | None, token: str | None) -> AsyncComfyfleet:
    url = server or settings.comfyfleet_server
    if not url:
        raise ClientError("no server: give --server URL or set COMFYFLEET_SERVER")
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"--server must be an http(s) URL (got {url!r})")
    secret = token or (settings.comfyfleet_token.get_secret_value() if settings.comfyfleet_token else None)
    register_secret(secret)
    return AsyncComfyfleet(url, token=secret)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _ask(server: str | None, token: str | None, request: Callable[[AsyncComfyfleet], Awaitable[T]]) -> T:
    """One request to the server: connect, `request(client)`, close (the commands that only ask once)."""

    async def go() -> T:
        async with connect(get_settings(), server, token) as cf:
            return await request(cf)

    return _run(go())


def _echo_json(data: Any) -> None:
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    typer.echo(json.dumps(data, indent=2, default=str))


def _bars() -> Any:
    from rich.progress import Progress

    from app.bars import progress_columns

    return Progress(*progress_columns(), transient=False)


def _check_ended(kind: str, ident: str, view: Any) -> None:
    if view.state != "succeeded":
        error = getattr(view, "error", None)
        why = f": {error.message}" if error is not None else ""
        raise ComfyfleetError(f"{kind} {ident} {view.state}{why}")


# --- generate --server ---------------------------------------------------------------------------
def remote_generate(
    settings: Settings,
    *,
    server: str | None,
    token: str | None,
    image: str | None,
    raw: dict[str, Any],
    workflow: str | None,
    output: Path | None,
    as_json: bool,
    files: dict[str, str | None] | None = None,
) -> None:
    """`comfyfleet generate --server`: submit, follow with bars, download the MP4. `files` holds the
    other inputs (end_image, audio) as paths or URLs, sent as `<name>_url` / `<name>_base64`."""
    fields = {k: v for k, v in raw.items() if k != "prompt"}
    if workflow:
        fields["workflow"] = workflow
    for name, source in (files or {}).items():
        if source is not None:
            fields.update(file_fields(source, name))

    async def go() -> Any:
        async with connect(settings, server, token) as cf:
            job = await cf.submit(image=image, prompt=raw["prompt"], **fields)
            try:
                final = await _watch_job(cf, job.job_id, quiet=as_json)
            except (asyncio.CancelledError, KeyboardInterrupt):
                with contextlib.suppress(Exception):
                    await asyncio.shield(cf.cancel(job.job_id))
                raise
            _check_ended("job", job.job_id, final)
            ext = ".webm" if raw.get("output_format") == "webm" else ".mp4"
            out = output or default_output(
                job.job_id, suffix=ext
            )  # out/ (gitignored), never the current folder
            await cf.download(final.result["video_url"], out)
            return final, out

    final, out = _run(go())
    if as_json:
        _echo_json({**final.model_dump(mode="json"), "local_path": str(out)})
        return
    r = final.result or {}
    typer.echo(f"video: {r.get('video_url')}")
    typer.echo(f"local: {out}")
    typer.echo(
        f"seed {r.get('seed')}, {r.get('num_frames')} frames @ {r.get('fps')} fps, {r.get('resolution')}, "
        f"{r.get('video_size_bytes')} bytes, cached={r.get('cached')}, "
        f"cost ${float(r.get('cost_usd') or 0):.4f}" + (" (SIMULATED)" if r.get("simulated") else "")
    )


async def _watch_job(cf: AsyncComfyfleet, job_id: str, *, quiet: bool) -> Any:
    if quiet:
        return await cf.wait(job_id)
    from app.bars import JobBars

    with _bars() as progress:
        bars = JobBars(progress)
        final = await cf.wait(job_id, on_progress=bars.update)
        bars.finish(final.state)
    return final


# --- story ---------------------------------------------------------------------------------------
def story(
    image: str = typer.Option(..., "--image", help="Start image: a local path (uploaded) or an http(s) URL."),
    prompts: list[str] = typer.Option(
        None, "--prompt", help="One segment's prompt; repeat for each segment, in order."
    ),
    segments_file: Path | None = typer.Option(
        None, "--segments-file", help="JSON list of segments (prompt, num_frames, seed, workflow, ...)."
    ),
    frames: int | None = typer.Option(None, "--frames", help="Frames per segment (4n+1, default 81)."),
    width: int | None = typer.Option(None, "--width"),
    height: int | None = typer.Option(None, "--height"),
    steps: int | None = typer.Option(None, "--steps"),
    fps: int | None = typer.Option(None, "--fps"),
    seed: int | None = typer.Option(
        None, "--seed", help="Story seed; segment i uses seed + i unless it sets one."
    ),
    workflow: str | None = typer.Option(None, "--workflow", help="An image-to-video workflow."),
    output: Path | None = typer.Option(
        None, "--output", help="Where to write the joined MP4 (default: out/<story id>.mp4)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the finished story as JSON."),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Make one video from chained segments on a server: each segment starts from the previous one's
    last frame; the segments are joined without re-encoding."""
    settings = get_settings()
    segments: list[dict[str, Any]] = []
    if segments_file is not None:
        try:
            loaded = json.loads(segments_file.read_text())
        except (OSError, ValueError) as exc:
            raise ClientError(f"--segments-file: cannot read {segments_file} as JSON ({exc})") from None
        if not isinstance(loaded, list) or not all(isinstance(s, dict) for s in loaded):
            raise ClientError("--segments-file must hold a JSON list of segment objects")
        segments += loaded
    segments += [{"prompt": p} for p in prompts or []]
    if not segments:
        raise ClientError("give each segment's --prompt (or a --segments-file)")
    shared = {
        k: v
        for k, v in {
            "num_frames": frames,
            "width": width,
            "height": height,
            "steps": steps,
            "fps": fps,
            "seed": seed,
            "workflow": workflow,
        }.items()
        if v is not None
    }

    async def go() -> Any:
        async with connect(settings, server, token) as cf:
            view = await cf.submit_story(image=image, segments=segments, **shared)
            try:
                if as_json:
                    final = await cf.wait_story(view.story_id)
                else:
                    from app.bars import StoryBars

                    with _bars() as progress:
                        bars = StoryBars(progress)
                        final = await cf.wait_story(view.story_id, on_progress=bars.update)
                        bars.finish(final.state)
            except (asyncio.CancelledError, KeyboardInterrupt):
                with contextlib.suppress(Exception):
                    await asyncio.shield(cf.cancel_story(view.story_id))
                raise
            _check_ended("story", view.story_id, final)
            out = output or default_output(view.story_id)
            await cf.download(final.result["video_url"], out)
            return final, out

    final, out = _run(go())
    if as_json:
        _echo_json({**final.model_dump(mode="json"), "local_path": str(out)})
        return
    r = final.result or {}
    typer.echo(f"video: {r.get('video_url')}")
    typer.echo(f"local: {out}")
    cached = sum(1 for s in final.segments if s.cached)
    typer.echo(
        f"{len(final.segments)} segments ({cached} from the cache), {r.get('num_frames')} frames "
        f"@ {r.get('fps')} fps, {r.get('resolution')}, cost ${float(r.get('cost_usd') or 0):.4f}"
        + (" (SIMULATED)" if r.get("simulated") else "")
    )


# --- batch ---------------------------------------------------------------------------------------
def batch(
    requests_file: Path = typer.Argument(
        ..., help="JSON list of generate requests; `image` may be a local path or URL."
    ),
    webhook_url: str | None = typer.Option(
        None, "--webhook-url", help="One signed webhook when all have ended."
    ),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for every job to end."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Download every video here."),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Submit many generate requests at once (all checked before any starts) and follow them."""
    settings = get_settings()
    try:
        requests = json.loads(requests_file.read_text())
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {requests_file} as JSON ({exc})") from None
    if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
        raise ClientError(f"{requests_file} must hold a JSON list of request objects")

    async def go() -> Any:
        async with connect(settings, server, token) as cf:
            view = await cf.submit_batch(requests, webhook_url=webhook_url)
            if not wait:
                return view
            if as_json:
                view = await cf.wait_batch(view.batch_id)
            else:
                with _bars() as progress:
                    task = progress.add_task("batch", total=view.total, info="")

                    def show(b: Any) -> None:
                        done = sum(
                            n for s, n in b.counts.items() if s in ("succeeded", "failed", "cancelled")
                        )
                        info = ", ".join(f"{n} {s}" for s, n in b.counts.items() if n)
                        progress.update(task, completed=done, info=info)

                    view = await cf.wait_batch(view.batch_id, on_progress=show)
            if output_dir is not None:
                for job in view.jobs:
                    result = getattr(job, "result", None)
                    if result and result.get("video_url"):
                        await cf.download(result["video_url"], output_dir / f"{job.job_id}.mp4")
            return view

    view = _run(go())
    if as_json:
        _echo_json(view)
        return
    typer.echo(
        f"batch {view.batch_id}: {view.state}, " + ", ".join(f"{n} {s}" for s, n in view.counts.items() if n)
    )
    failed = view.counts.get("failed", 0) + view.counts.get("cancelled", 0)
    if wait and failed:
        raise ComfyfleetError(f"batch {view.batch_id}: {failed} of {view.total} jobs did not succeed")


# --- jobs ----------------------------------------------------------------------------------------
@jobs_app.command("list")
def jobs_list(
    state: list[str] = typer.Option(None, "--state", help="Only jobs in this state (repeatable)."),
    limit: int = typer.Option(20, "--limit", help="How many jobs to list, newest first."),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """The server's latest jobs."""

    jobs = _ask(server, token, lambda cf: cf.jobs(states=state or None, limit=limit))
    if as_json:
        _echo_json([j.model_dump(mode="json") for j in jobs])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("job", "state", "stage", "progress", "workflow", "cost $"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j.job_id, j.state, j.stage or "-", f"{j.progress:.0%}", j.workflow, f"{j.cost_usd or 0:.4f}"
        )
    Console(width=160).print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: str = typer.Argument(...),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """One job as JSON (state, progress, result with fresh URLs, error)."""

    _echo_json(_ask(server, token, lambda cf: cf.job(job_id)))


@jobs_app.command("watch")
def jobs_watch(
    job_id: str = typer.Argument(...),
    output: Path | None = typer.Option(
        None, "--output", help="Download the video here when it succeeds (default: no download)."
    ),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Follow a job's progress until it ends (Ctrl-C stops watching; the job goes on)."""

    async def go() -> Any:
        async with connect(get_settings(), server, token) as cf:
            final = await _watch_job(cf, job_id, quiet=False)
            if output is not None and final.state == "succeeded":
                await cf.download(final.result["video_url"], output)
            return final

    final = _run(go())
    typer.echo(f"job {job_id}: {final.state}")
    _check_ended("job", job_id, final)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str = typer.Argument(...),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Cancel a job: its prompt is removed from (or interrupted on) the GPU."""

    job = _ask(server, token, lambda cf: cf.cancel(job_id))
    typer.echo(f"job {job_id}: {job.state}")


# --- fleet ---------------------------------------------------------------------------------------
@fleet_app.command("list")
def fleet_list(
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """The server's instances: state, GPU, $/h, uptime, spent, workflows held, current job."""

    found = _ask(server, token, lambda cf: cf.instances())
    if as_json:
        _echo_json([i.model_dump(mode="json") for i in found])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("id", "state", "gpu", "$/h", "uptime", "spent $", "workflows", "job"):
        table.add_column(col)
    for i in found:
        table.add_row(
            i.id,
            i.state,
            i.gpu_name or "-",
            f"{i.price_per_hour:.3f}",
            f"{i.uptime_s / 60:.1f} min",
            f"{i.spent_usd:.4f}",
            ", ".join(i.workflows) or "-",
            i.current_job or "-",
        )
    Console(width=160).print(table)


@fleet_app.command("show")
def fleet_show(
    instance_id: str = typer.Argument(...),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """One instance as JSON, with provisioning progress per model file."""

    _echo_json(_ask(server, token, lambda cf: cf.instance(instance_id)))


@fleet_app.command("verify")
def verify(
    instance_id: str = typer.Argument(...),
    refetch: bool = typer.Option(False, "--refetch", help="Download again the files that differ."),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Re-check every model file's sha256 on the instance (over SSH, by the server that holds it)."""

    report = _ask(server, token, lambda cf: cf.verify(instance_id, refetch=refetch))
    if as_json:
        _echo_json(report)
    else:
        for wf in report.workflows:
            for f in wf.files:
                mark = "ok" if f.ok else f.status.upper()
                typer.echo(
                    f"[{mark}] {wf.workflow}: {f.folder}/{f.name}" + (" (refetched)" if f.refetched else "")
                )
        typer.echo(f"instance {report.instance_id}: {'all files verified' if report.ok else 'files differ'}")
    if not report.ok:
        raise ComfyfleetError(
            f"instance {instance_id}: model files differ"
            + ("" if refetch else " (--refetch downloads them again)")
        )


@fleet_app.command("destroy")
def fleet_destroy(
    instance_id: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Destroy an instance through the server: its jobs go back to the queue first."""
    if not yes and not typer.confirm(f"destroy instance {instance_id}?", default=False):
        raise typer.Exit(1)

    report = _ask(server, token, lambda cf: cf.destroy(instance_id))
    typer.echo(f"instance {report.instance_id} destroyed; {len(report.requeued_jobs)} job(s) requeued")


@fleet_app.command("spend")
def fleet_spend(
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    token: str | None = typer.Option(None, "--token", help=TOKEN_HELP),
) -> None:
    """Money spent today and this month (UTC), the cap, per instance and per workflow."""

    spend = _ask(server, token, lambda cf: cf.spend())
    if as_json:
        _echo_json(spend)
        return
    typer.echo(
        f"today ${spend.today_usd:.4f}, this month ${spend.month_usd:.4f} (cap ${spend.cap_usd:.2f}, "
        f"live ${spend.live_per_hour_usd:.3f}/h)"
    )
    for w in spend.per_workflow:
        typer.echo(f"  {w['workflow']}: ${w['month_usd']:.4f} this month over {w['jobs_month']} job(s)")
