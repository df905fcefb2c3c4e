"""The HTTP API: `create_app(services)` builds the FastAPI app (OpenAPI at /docs).

Auth (`app.api.auth`): when API_TOKEN or API_TOKENS is set, every route needs a token
(`Authorization: Bearer <token>` or `X-API-Key: <token>`) except the probes (/healthz, /readyz), the API docs
(/docs, /redoc, /openapi.json: the schema is not a secret), the web console's page and assets (`/`,
`/console`: they hold no secret; `app.api.console`) and the local store's /files route, whose keys are
unguessable content hashes (anyone holding a result URL may fetch it, which is what a result URL is for).
A token over its request rate or daily spend gets 429. Bad input answers 422 (413 for oversize images)
with the offending field named, and creates no job. Every error status a route can answer is in the
OpenAPI schema with its body (`ErrorBody`), so clients (and the fuzzing test) can rely on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.auth import Refused, TokenGate
from app.api.console import console_router, mount_console
from app.api.docs import mount_redoc
from app.api.groups import group_router, install_handlers
from app.api.inputs import gather_inputs, multipart_openapi, read_body
from app.api.schemas import MAX_LIST_OFFSET, ErrorBody, GenerateVideoRequest, JobList, JobView
from app.api.sse import event_stream
from app.api.urls import RequestBaseURL, public_url_for
from app.config import ApiToken
from app.errors import ComfyfleetError, ValidationError
from app.jobs.metrics import CONTENT_TYPE
from app.jobs.models import Job, JobState
from app.jobs.repo import JobNotFound
from app.jobs.services import Services
from app.redact import redact
from app.workflows.plan import resolve_workflow

log = logging.getLogger(__name__)
MAX_WAIT_S = 600.0
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+(?:\.\d+)?)")


# Room for the JSON around the image (prompt, other fields) on top of the base64 image itself.
BODY_OVERHEAD_BYTES = 1024 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


def _too_large_body(limit: int) -> dict[str, Any]:
    message = f"the request body is larger than {limit} bytes (the image limit plus base64 and the JSON)"
    return {"detail": f"body: {message}", "errors": [{"field": "body", "message": message}]}


class BodyLimit:
    """ASGI middleware: a request body past `limit` bytes is refused with 413 as soon as it is seen
    (declared Content-Length, or counted while it streams), instead of being read whole into memory."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse(_too_large_body(self.limit), status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)


def _field_of(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a field name: `requests[3].prompt` (list positions in brackets)."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


_ERROR = {"model": ErrorBody}
_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <token>`")


def _errors_are_error_body(schema: dict[str, Any]) -> dict[str, Any]:
    """Every 422 in the schema is documented as what the handler really sends (`ErrorBody`), not
    FastAPI's default shape, so a client validating responses against the schema is not misled."""
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            resp = op.get("responses", {}).get("422")
            if resp is not None:
                resp["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorBody" not in components:
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["ErrorBody"] = body
    text_schema = json.dumps(schema)
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in text_schema:
            components.pop(unused, None)
    return schema


def create_app(services: Services, *, manage_lifecycle: bool = True) -> FastAPI:
    settings = services.settings
    gate = TokenGate.from_settings(settings)  # ConfigError on malformed API_TOKENS: refuse to start
    if getattr(services, "replica", None) is not None:
        gate.shared = services.replica.rates  # a token's rate counts requests to every replica
    if not gate.enabled:
        log.warning("API_TOKEN is not set: the API accepts requests without authentication")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await services.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await services.stop()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package, not a CDN (offline use)
    app = FastAPIOffline(
        redoc_url=None,  # app.api.docs serves /redoc (same assets, no request to any other host)
        title="comfyfleet",
        description="Wan 2.2 image-to-video on rented GPUs"
        + (" (SIMULATED WORLD)" if settings.simulated else ""),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.services = services
    # a request may carry a start image, an end image and audio (base64 or multipart)
    files_limit = 2 * services.intake.max_bytes + getattr(services.intake, "max_audio_bytes", 0)
    app.add_middleware(BodyLimit, limit=files_limit * 4 // 3 + BODY_OVERHEAD_BYTES)
    app.add_middleware(RequestBaseURL, settings=settings)  # one base URL for every URL we give out

    async def caller(
        bearer: HTTPAuthorizationCredentials | None = Depends(_BEARER),
        api_key: str | None = Depends(_API_KEY),
    ) -> ApiToken | None:
        """The calling token (None when the API is open), counted against its request rate."""
        token = gate.authenticate(bearer.credentials if bearer else None, api_key)
        await gate.check_rate(token)
        return token

    async def within_budget(token: ApiToken | None = Depends(caller)) -> ApiToken | None:
        """For routes that create jobs: the token has not reached its daily spend limit."""
        await gate.check_budget(token, services.repo.spend_since)
        return token

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _errors_are_error_body(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # --- errors ------------------------------------------------------------------------------------
    @app.exception_handler(Refused)
    async def _refused(_req: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field_of(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's "There was an error parsing the body": bytes that are not UTF-8 text at all
            message = "not valid JSON: the body is not UTF-8 text"
            return JSONResponse(
                {"detail": f"body: {message}", "errors": [{"field": "body", "message": message}]}, 422
            )
        return await http_exception_handler(req, exc)

    @app.exception_handler(BodyTooLarge)
    async def _body_too_large(_req: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(_too_large_body(exc.limit), status_code=413)

    @app.exception_handler(ValidationError)
    async def _invalid(_req: Request, exc: ValidationError) -> JSONResponse:
        status = 413 if "byte limit" in exc.reason else 422
        errors = [{"field": e.field, "message": redact(e.reason)} for e in exc.problems]  # every bad field
        body = {"detail": redact(str(exc)), "errors": errors}
        return JSONResponse(body, status_code=status)

    @app.exception_handler(JobNotFound)
    async def _missing(_req: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"no job {exc.args[0]}"}, status_code=404)

    @app.exception_handler(ComfyfleetError)
    async def _error(_req: Request, exc: ComfyfleetError) -> JSONResponse:
        return JSONResponse({"detail": redact(str(exc))}, status_code=503 if exc.retryable else 400)

    # --- probes ------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        problems = []
        if not services.started:
            problems.append("services not started")
        try:
            async with services.sessionmaker() as s:
                await s.execute(text("SELECT 1"))
        except Exception as exc:
            problems.append(f"database: {redact(str(exc))}")
        body = {
            "status": "ready" if not problems else "not ready",
            "problems": problems,
            "simulated": settings.simulated,
            "provider": services.provider.name,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    api = APIRouter(dependencies=[Depends(caller)], responses={401: _ERROR, 429: _ERROR})

    def view(request: Request, job: Job, position: int | None) -> dict[str, Any]:
        out = job.to_public(position)
        out["status_url"] = public_url_for(request, settings, "get_job", job_id=job.id)
        out["events_url"] = public_url_for(request, settings, "job_events", job_id=job.id)
        return out

    async def full_view(request: Request, job: Job) -> dict[str, Any]:
        out = view(request, job, await services.repo.queue_position(job))
        if job.state == JobState.SUCCEEDED.value:
            out["result"] = await services.fresh_urls(job)
        return out

    # --- jobs --------------------------------------------------------------------------------------
    @api.post(
        "/vastai/generate-video",
        status_code=202,
        response_model=JobView,
        responses={200: {"model": JobView}, 413: _ERROR, 422: _ERROR},
        tags=["jobs"],
        openapi_extra=multipart_openapi("GenerateVideoRequest"),
    )
    async def generate_video(
        request: Request,
        prefer: str | None = Header(None),
        token: ApiToken | None = Depends(within_budget),
    ) -> JSONResponse:
        """Start a job. 202 with `job_id` and `status_url`; with `wait` (or `Prefer: wait=N`) the response
        is held until the job ends or the wait runs out (200 when it ended)."""
        body, uploads = await read_body(request, GenerateVideoRequest, services.intake)
        try:
            if body.webhook_url is not None:
                await services.intake.check_url(body.webhook_url, "webhook_url")
            # unknown workflow, or a file it does not take: 422 before fetching anything
            wf = resolve_workflow(
                services.workflows, body.workflow or settings.default_workflow, body.params()
            )
        except BaseException:
            for upload in uploads.values():
                upload.discard()
            raise
        files, given = await gather_inputs(body, uploads, services.intake, wf.inputs.taken)
        image = files.pop("image", None)
        job = await services.submit(
            body.params(),
            image,
            workflow=body.workflow,
            webhook_url=body.webhook_url,
            reuse_cached=body.reuse_cached,
            submitted_by=token.name if token else None,
            files=files,
            given=given,
        )
        wait_s = 0.0
        if body.wait is True:
            wait_s = MAX_WAIT_S
        elif body.wait not in (False, None) and float(body.wait) > 0:
            wait_s = float(body.wait)
        if prefer and (m := _PREFER_WAIT.search(prefer)):
            wait_s = float(m.group(1))
        wait_s = min(wait_s, MAX_WAIT_S)
        if wait_s > 0:
            job = await services.manager.wait(job.id, wait_s)
        status = 200 if job.terminal else 202
        out = await full_view(request, job)
        return JSONResponse(out, status_code=status, headers={"Location": out["status_url"]})

    @api.get("/jobs/{job_id}", response_model=JobView, name="get_job", tags=["jobs"], responses={404: _ERROR})
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        job = await services.repo.require(job_id)
        return await full_view(request, job)

    @api.delete("/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses={404: _ERROR})
    async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        """Cancel: the prompt is removed from (or interrupted on) the GPU, then the job is `cancelled`."""
        await services.repo.require(job_id)
        job = await services.manager.cancel(job_id)
        return await full_view(request, job)

    @api.get("/jobs", response_model=JobList, tags=["jobs"])
    async def list_jobs(
        request: Request,
        state: list[JobState] | None = Query(None, description="Only jobs in these states"),
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=MAX_LIST_OFFSET),
    ) -> dict[str, Any]:
        jobs = await services.repo.list(
            states=[s.value for s in state] if state else None, limit=limit, offset=offset
        )
        out = [view(request, j, None) for j in jobs]
        done = [(o, j) for o, j in zip(out, jobs, strict=True) if j.state == JobState.SUCCEEDED.value]
        if done:  # presigned URLs stored at a job's end expire: hand out fresh ones, as GET /jobs/{id} does
            fresh = await asyncio.gather(*(services.fresh_urls(j) for _, j in done))
            for (o, _), result in zip(done, fresh, strict=True):
                o["result"] = result
        return {"jobs": out}

    @api.get(
        "/jobs/{job_id}/events",
        name="job_events",
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={404: _ERROR},
    )
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: a `snapshot`, then `progress` events, then one `end` with the final job."""
        await services.repo.require(job_id)
        return event_stream(
            services.events,
            job_id,
            lambda: services.repo.require(job_id),
            lambda job: full_view(request, job),
        )

    @api.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        return Response(await services.metrics.render(services.repo, services.pool), media_type=CONTENT_TYPE)

    app.include_router(api)
    # stories, batches, fleet (app.api.groups): same token, jobs rendered as GET /jobs/{id} does
    app.include_router(
        group_router(services, full_view, within_budget),
        dependencies=[Depends(caller)],
        responses={401: _ERROR, 429: _ERROR},
    )
    install_handlers(app)
    # the web console: /workflows, rerun, the cleanup log (token like the rest) and its static pages
    app.include_router(
        console_router(services, full_view, within_budget),
        dependencies=[Depends(caller)],
        responses={401: _ERROR, 429: _ERROR},
    )
    mount_console(app)
    mount_redoc(app)
    for router in services.routers:
        app.include_router(router)
    return app
