"""`comfyfleet generate` and `comfyfleet cleanup` (`serve` is the API room's, in `app.api.cli`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import typer

from app.config import Settings, get_settings
from app.errors import ComfyfleetError
from app.intake import require_file
from app.outdir import resolve_output
from app.workflows.params import request_from_cli


def register(cli: typer.Typer) -> None:
    cli.command("generate")(generate)
    cli.command("cleanup")(cleanup)


# --- generate ------------------------------------------------------------------------------------
def generate(
    image: str | None = typer.Option(
        None,
        "--image",
        help="Start image: a local path or an http(s) URL (the workflow says if it needs one).",
    ),
    end_image: str | None = typer.Option(
        None, "--end-image", help="Last frame (first-last-frame workflows): a path or an http(s) URL."
    ),
    audio: str | None = typer.Option(None, "--audio", help="Audio (S2V): a local path or an http(s) URL."),
    camera_motion: str | None = typer.Option(
        None, "--camera-motion", help="e.g. pan_left, dolly_in, static."
    ),
    quality_preset: str | None = typer.Option(None, "--quality-preset", help="draft, standard, high, ultra."),
    enhance_prompt: bool = typer.Option(False, "--enhance-prompt", help="Restructure the prompt first."),
    output_format: str | None = typer.Option(None, "--output-format", help="mp4 (H.264) or webm (VP9)."),
    crf: int | None = typer.Option(None, "--crf", help="Encoder CRF (default 18)."),
    prompt: str = typer.Option(..., "--prompt", help="What should happen in the video."),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt"),
    frames: int | None = typer.Option(None, "--frames", help="Number of frames (4n+1, default 81)."),
    width: int | None = typer.Option(None, "--width"),
    height: int | None = typer.Option(None, "--height"),
    steps: int | None = typer.Option(None, "--steps"),
    cfg: float | None = typer.Option(None, "--cfg"),
    seed: int | None = typer.Option(None, "--seed", help="-1 = random (the seed used is printed)."),
    fps: int | None = typer.Option(None, "--fps"),
    workflow: str | None = typer.Option(None, "--workflow"),
    output: Path | None = typer.Option(
        None, "--output", help="Where to write the MP4 (default: out/comfyfleet-<date>-<time>.mp4)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the finished job as JSON."),
    server: str | None = typer.Option(
        None, "--server", help="Run on a deployed comfyfleet server (default COMFYFLEET_SERVER) instead."
    ),
    token: str | None = typer.Option(
        None, "--token", help="That server's API token (better: COMFYFLEET_TOKEN, kept out of shell history)."
    ),
) -> None:
    """Run the whole pipeline in this process (cache, pool, provisioning, ComfyUI, store) for one video,
    or with --server (or COMFYFLEET_SERVER) on a deployed server, with the same progress bars."""
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
    if server or settings.comfyfleet_server:
        from app.client.cli import remote_generate

        remote_generate(
            settings,
            server=server,
            token=token,
            image=image,
            raw=raw,
            files={"end_image": end_image, "audio": audio},
            workflow=workflow,
            output=output,
            as_json=as_json,
        )
        return
    sources = {"image": image, "end_image": end_image, "audio": audio}
    sources = {
        k: (v if v.startswith(("http://", "https://")) else str(Path(v).expanduser()))
        for k, v in sources.items()
        if v is not None
    }
    for name, src in sources.items():
        if not src.startswith(("http://", "https://")):
            require_file(Path(src), _option(name))  # a missing file fails now, not after the world starts
    if not as_json:
        banner(settings, "generating in-process")
    suffix = ".webm" if output_format == "webm" else ".mp4"
    out, defaulted = resolve_output(output, suffix=suffix)  # no --output: out/ (gitignored), never the cwd
    job = asyncio.run(_generate(settings, sources, raw, workflow, out.resolve(), quiet=as_json))
    if as_json:
        typer.echo(json.dumps(job, indent=2, default=str))
    else:
        r = job["result"]
        local_store = settings.effective_store_backend == "local"
        hint = "  (served while `comfyfleet serve` runs)" if local_store else ""
        typer.echo(f"video: {r['video_url']}{hint}")
        where = "  (no --output given: written under out/)" if defaulted else ""
        typer.echo(f"local: {job['local_path']}{where}")
        typer.echo(
            f"seed {r['seed']}, {r['num_frames']} frames @ {r['fps']} fps, {r['resolution']}, "
            f"{r['video_size_bytes']} bytes, cached={r['cached']}, cost ${r['cost_usd']:.4f}"
            + (" (SIMULATED)" if r.get("simulated") else "")
        )


def _option(input_name: str) -> str:
    """The command-line option of a file input (`end_image` -> `--end-image`): what its errors name."""
    return f"--{input_name.replace('_', '-')}"


async def _load_inputs(intake: Any, sources: dict[str, str]) -> dict[str, Any]:
    """The command line's files (path or URL per input), checked like the API's; staged until the job
    exists (discarded on any error)."""
    staged: dict[str, Any] = {}
    try:
        for name, src in sources.items():
            field = _option(name)
            remote = src.startswith(("http://", "https://"))
            if name == "audio":
                staged[name] = await (
                    intake.audio_from_url(src, field) if remote else intake.audio_from_path(Path(src), field)
                )
            else:
                staged[name] = await (
                    intake.from_url(src, field) if remote else intake.from_path(Path(src), field)
                )
    except BaseException:
        for f in staged.values():
            f.discard()
        raise
    return staged


async def _generate(
    settings: Settings,
    sources: dict[str, str],
    raw: dict[str, Any],
    workflow: str | None,
    out: Path,
    *,
    quiet: bool,
) -> dict[str, Any]:
    from app.jobs.wiring import build_services

    services = await build_services(settings)
    services.run_cleanup_loop = False
    services.recover_on_start = False
    await services.start()
    job = None
    try:
        files = await _load_inputs(services.intake, sources)
        given = {name: _option(name) for name in files}
        img = files.pop("image", None)
        job = await services.submit(raw, img, workflow=workflow, local_copy=out, files=files, given=given)
        final = await _follow(services, job.id, quiet=quiet)
        if final.state != "succeeded":
            kind = final.error_kind or final.state
            raise ComfyfleetError(f"job {final.id} {final.state} ({kind}): {final.error_message}")
        # The runner copies a rendered video to `out` (and forgets the request). Still pending = a cache
        # hit, which downloaded nothing: fetch the stored video, even over an older file at `out`.
        not_copied = services.runner.local_copies.pop(final.id, None) is not None
        if not_copied or not await asyncio.to_thread(out.exists):
            await _fetch(services, final.result["video_url"], out)
        public = final.to_public()
        public["local_path"] = str(out)
        return public
    except asyncio.CancelledError:
        if job is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(services.manager.cancel(job.id, "interrupted from the command line"))
        raise
    finally:
        await services.stop()


async def _follow(services: Any, job_id: str, *, quiet: bool) -> Any:
    """Drive rich progress bars (provisioning bytes, sampling steps) from the job's events."""
    from rich.progress import Progress

    from app.bars import JobBars, progress_columns

    if quiet:
        return await services.manager.wait(job_id, services.settings.job_timeout_s + 60)
    with Progress(*progress_columns(), transient=False) as progress:
        bars = JobBars(progress)
        async with services.events.subscribe(job_id) as q:
            while True:
                job = await services.repo.require(job_id)
                if job.terminal:
                    bars.finish(job.state)
                    return job
                try:
                    ev = await asyncio.wait_for(q.get(), 1.0)
                except TimeoutError:
                    continue
                if ev.get("event") == "end":
                    continue
                bars.update(ev)


async def _fetch(services: Any, url: str, out: Path) -> None:
    from app.store.local import LocalStore

    store = services.store
    prefix = getattr(store, "public_base_url", None)
    if isinstance(store, LocalStore) and prefix and url.startswith(prefix + store.files_prefix + "/"):
        from urllib.parse import unquote

        key = unquote(url[len(prefix + store.files_prefix + "/") :])
        await asyncio.to_thread(shutil.copyfile, store.path_for(key), out)
        return
    import httpx

    async with (
        httpx.AsyncClient(timeout=60, follow_redirects=True) as client,
        client.stream("GET", url) as resp,
    ):
        resp.raise_for_status()
        with out.open("wb") as fh:
            async for chunk in resp.aiter_bytes(1 << 20):
                fh.write(chunk)


# --- cleanup -------------------------------------------------------------------------------------
def cleanup(
    dry_run: bool = typer.Option(False, "--dry-run", help="Show and record what would be done; do nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One reaper pass (for cron): idle, stuck and orphaned instances, stuck jobs, old temp files."""
    from app.jobs.wiring import build_cleaner

    settings = get_settings()

    async def main() -> list[dict[str, Any]]:
        cleaner, close = await build_cleaner(settings)
        try:
            return [a.as_dict() for a in await cleaner.run_once(dry_run=dry_run)]
        finally:
            await close()

    actions = asyncio.run(main())
    if as_json:
        typer.echo(json.dumps(actions, indent=2))
        return
    if not actions:
        typer.echo("nothing to clean up")
    for a in actions:
        mark = "would" if a["dry_run"] else ("done" if a["ok"] else "FAILED")
        typer.echo(
            f"[{mark}] {a['kind']} {a['target']}: {a['reason']}" + (f" ({a['error']})" if a["error"] else "")
        )


# --- helpers -------------------------------------------------------------------------------------
def banner(settings: Settings, what: str) -> None:
    """Say on stderr what a long-running command does and against which provider; loudly when simulated."""
    if settings.simulated:
        typer.secho(
            "=== SIMULATED WORLD: no VAST_API_KEY, so GPUs, ComfyUI and model downloads are emulated "
            "locally; every output says simulated ===",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.secho(f"comfyfleet: {what} (provider={settings.effective_provider})", err=True)
