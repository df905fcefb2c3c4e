"""The web console's server side: the routes it needs beyond the jobs API, and its static files.

- `GET /workflows`, `GET /workflows/{name}`: what a request form needs (`app.workflows.describe`).
- `POST /jobs/{id}/rerun?new_seed=`: the same request again (same image, same parameters), with the same
  seed or a new random one.
- `GET /cleanup`: the cleanup log (what the reaper destroyed or cancelled, and why).
- `/` and `/console`: the console itself, a small static app (`app/api/console/`: HTML, CSS, JS, no build
  step, no CDN). The page holds no secret: with API_TOKEN set it asks for the token and keeps it in the
  browser session (sessionStorage) only; every API call carries it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.api.schemas import ErrorBody, JobView
from app.config import ApiToken
from app.errors import ValidationError
from app.jobs.services import Services
from app.workflows.describe import describe, describe_all
from app.workflows.loader import get_workflow, load_workflows

CONSOLE_DIR = Path(__file__).parent / "console"
_ERROR = {"model": ErrorBody}


class WorkflowInput(BaseModel):
    name: str
    kind: str  # "image" | "audio"
    required: bool
    fields: list[str]  # the request fields that carry it (`<name>_url`, `<name>_base64`; multipart: `<name>`)


class WorkflowView(BaseModel):
    name: str
    version: str | None = None
    description: str
    inputs: list[WorkflowInput]
    params: list[dict[str, Any]]  # each: name, type, default, min, max, multiple_of, choices, ..., required
    params_schema: dict[str, Any]  # the same as one JSON Schema object
    max_audio_seconds: float | None = None
    auto_size_area: int | None = None
    camera_motions: list[dict[str, Any]]  # each: name, how ("pose" | "prompt"), value
    quality_presets: list[dict[str, Any]]  # each: name, values, workflow?, aesthetic?


class WorkflowList(BaseModel):
    workflows: list[WorkflowView]
    default: str
    simulated: bool


class CleanupEntry(BaseModel):
    at: float
    kind: str
    target: str
    reason: str
    dry_run: bool
    ok: bool
    error: str | None = None


class CleanupLog(BaseModel):
    actions: list[CleanupEntry]


def console_router(
    services: Services,
    full_view: Callable[[Request, Any], Awaitable[dict[str, Any]]],
    within_budget: Callable[..., Awaitable[ApiToken | None]],
) -> APIRouter:
    settings = services.settings
    router = APIRouter()

    @router.get("/workflows", response_model=WorkflowList, tags=["workflows"])
    async def list_workflows() -> dict[str, Any]:
        """Every workflow: name, description, file inputs, parameters with limits and defaults."""
        return {
            "workflows": describe_all(load_workflows(settings)),
            "default": settings.default_workflow,
            "simulated": settings.simulated,
        }

    @router.get("/workflows/{name}", response_model=WorkflowView, tags=["workflows"], responses={404: _ERROR})
    async def one_workflow(name: str) -> Any:
        """One workflow, described as in `GET /workflows`."""
        try:
            wf = get_workflow(name, settings)
        except ValidationError as exc:
            return JSONResponse(
                {"detail": exc.reason, "errors": [{"field": "name", "message": exc.reason}]}, 404
            )
        return describe(wf)

    @router.post(
        "/jobs/{job_id}/rerun",
        status_code=202,
        response_model=JobView,
        tags=["jobs"],
        responses={404: _ERROR, 422: _ERROR},
    )
    async def rerun_job(
        job_id: str,
        request: Request,
        new_seed: bool = Query(False, description="A new random seed instead of the job's seed"),
        token: ApiToken | None = Depends(within_budget),
    ) -> dict[str, Any]:
        """The job's request again: same image and parameters, the same seed (a cache hit when the first
        one succeeded) or a new one."""
        job = await services.repo.require(job_id)
        req = job.request or {}
        path = req.get("image_path")
        if not path:
            raise ValidationError("job_id", f"job {job_id} has no stored input image to run again")
        raw = dict(req.get("raw_params") or {})
        if new_seed:
            raw["seed"] = -1
        image = await services.intake.from_path(Path(path))
        new = await services.submit(
            raw, image, workflow=job.workflow, submitted_by=token.name if token else None
        )
        return await full_view(request, new)

    @router.get("/cleanup", response_model=CleanupLog, tags=["fleet"])
    async def cleanup_log(limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
        """The cleanup log, newest first: what was destroyed or cancelled, when and why."""
        rows = await services.repo.cleanup_actions(limit)
        return {
            "actions": [
                {
                    "at": r.at,
                    "kind": r.kind,
                    "target": r.target,
                    "reason": r.reason,
                    "dry_run": r.dry_run,
                    "ok": r.ok,
                    "error": r.error,
                }
                for r in rows
            ]
        }

    return router


def mount_console(app: FastAPI) -> None:
    """The console's pages (no auth: they hold no secret) and its assets, all from the package."""

    @app.get("/", include_in_schema=False)
    @app.get("/console", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/console/assets", StaticFiles(directory=CONSOLE_DIR / "assets"), name="console-assets")
