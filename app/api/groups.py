"""Routes for stories, batches and the fleet: `group_router(services, job_view)` and their error handlers.

Every request is checked whole before anything is created: a story's segments (each through the same
parameter validation as `POST /vastai/generate-video`, with the story image's size) and a batch's
requests (each one fully, its image fetched and decoded) answer 422 naming `segments[i].<field>` or
`requests[i].<field>`, and leave no job, story, batch or stored image behind.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.group_schemas import (
    BatchRequest,
    BatchView,
    DestroyReport,
    InstanceList,
    InstanceView,
    SpendView,
    StoryList,
    StoryRequest,
    StoryView,
    VerifyReport,
)
from app.api.inputs import gather_inputs, given_fields
from app.api.schemas import MAX_LIST_OFFSET, ErrorBody, GenerateVideoRequest
from app.api.sse import event_stream
from app.api.urls import public_url_for
from app.config import ApiToken
from app.errors import ValidationError, ValidationErrors
from app.intake import InputImage
from app.jobs.fleet import FleetConflict, InstanceNotFound
from app.jobs.groups import GroupNotFound, Story, StoryState, new_batch_id
from app.jobs.models import Job
from app.jobs.stories import segment_view
from app.redact import redact
from app.workflows.params import SEED_SPACE
from app.workflows.plan import check_inputs, resolve_workflow
from app.workflows.trim import can_drop_leading_frames

MAX_WAIT_S = 600.0
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+(?:\.\d+)?)")
FETCH_CONCURRENCY = 4  # images of one batch fetched at a time

JobViewFn = Callable[[Request, Job], Awaitable[dict[str, Any]]]
# The app's dependency for routes that create jobs: the calling token, within its daily spend limit.
BudgetDep = Callable[..., Awaitable[ApiToken | None]]
_ERROR = {"model": ErrorBody}


@contextmanager
def field_prefix(prefix: str) -> Iterator[None]:
    """Re-raise a ValidationError with its field under `prefix` (`requests[3]` + `prompt`)."""
    try:
        yield
    except ValidationError as exc:
        ValidationErrors.raise_if([ValidationError(f"{prefix}.{e.field}", e.reason) for e in exc.problems])
        raise  # not reached: problems is never empty


def install_handlers(app: FastAPI) -> None:
    _document_story_body(app)

    @app.exception_handler(GroupNotFound)
    async def _group_missing(_req: Request, exc: GroupNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"no story or batch {exc.args[0]}"}, status_code=404)

    @app.exception_handler(InstanceNotFound)
    async def _instance_missing(_req: Request, exc: InstanceNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"no instance {exc.args[0]}"}, status_code=404)

    @app.exception_handler(FleetConflict)
    async def _conflict(_req: Request, exc: FleetConflict) -> JSONResponse:
        return JSONResponse({"detail": redact(str(exc))}, status_code=409)


def _document_story_body(app: FastAPI) -> None:
    """`POST /vastai/generate-story` reads its body itself (JSON or multipart), so FastAPI does not list
    `StoryRequest` among the schemas its requestBody refers to: add it (and what it refers to)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        story = StoryRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in story.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault("StoryRequest", story)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _wait_seconds(wait: bool | float | None, prefer: str | None) -> float:
    wait_s = 0.0
    if wait is True:
        wait_s = MAX_WAIT_S
    elif wait not in (False, None) and float(wait) > 0:
        wait_s = float(wait)
    if prefer and (m := _PREFER_WAIT.search(prefer)):
        wait_s = float(m.group(1))
    return min(wait_s, MAX_WAIT_S)


def group_router(services: Any, job_view: JobViewFn, within_budget: BudgetDep) -> APIRouter:
    """The story, batch and fleet routes. `job_view` renders one job as `GET /jobs/{id}` does;
    `within_budget` is the app's token check for routes that create jobs (the jobs record its name)."""
    router = APIRouter()
    settings = services.settings
    intake = services.intake

    # --- stories -----------------------------------------------------------------------------------
    async def story_view(request: Request, story: Story) -> dict[str, Any]:
        req = story.request or {}
        segments = req.get("segments") or []
        ids = [j for j in story.segment_jobs or [] if j]
        jobs = await services.repo.many(ids)
        out_segments = []
        current = None
        for i, segment in enumerate(segments):
            job_id = (story.segment_jobs or [None] * len(segments))[i]
            job = jobs.get(job_id) if job_id else None
            result = None
            if job is not None:
                current = i + 1
                if job.state == "succeeded":
                    result = await services.fresh_urls(job)
            out_segments.append(segment_view(i, segment, job, result))
        result = dict(story.result) if story.result else None
        if result and result.get("store_key"):
            fresh = await services.fresh_urls_for_key(result["store_key"], result)
            result.update(fresh)
        return {
            "story_id": story.id,
            "state": story.state,
            "stage": story.stage,
            "progress": round(story.progress or 0.0, 4),
            "segment": current,
            "segments_total": len(segments),
            "segments": out_segments,
            "result": result,
            "error": (
                {"message": story.error_message, "kind": story.error_kind} if story.error_message else None
            ),
            "cost_usd": (result or {}).get("cost_usd")
            if result
            else round(sum(float(s.get("cost_usd") or 0.0) for s in out_segments), 6),
            "seed": req.get("seed"),
            "submitted_by": story.submitted_by,
            "created_at": story.created_at,
            "updated_at": story.updated_at,
            "finished_at": story.finished_at,
            "status_url": public_url_for(request, services.settings, "get_story", story_id=story.id),
            "events_url": public_url_for(request, services.settings, "story_events", story_id=story.id),
        }

    async def read_story_body(request: Request) -> tuple[StoryRequest, InputImage | None]:
        """JSON, or multipart with a `request` part (the JSON) and an `image` file part."""
        content_type = request.headers.get("content-type", "")
        upload: InputImage | None = None
        if content_type.startswith("multipart/form-data"):
            try:
                form = await request.form()
            except StarletteHTTPException as exc:  # Starlette's 400 for a body that does not parse
                raise ValidationError("body", f"is not valid multipart/form-data ({exc.detail})") from None
            raw_json = form.get("request")
            if not isinstance(raw_json, str):
                raise ValidationError("request", "the multipart body needs a `request` part holding the JSON")
            image_part = form.get("image")
            try:
                data = json.loads(raw_json)
            except ValueError as exc:
                raise ValidationError("request", f"is not JSON ({exc})") from None
            if image_part is not None and not isinstance(image_part, str):
                raw = await image_part.read(intake.max_bytes + 1)
                upload = await intake.from_bytes(raw, "image")
        else:
            try:
                data = await request.json()
            except ValueError:
                raise ValidationError("body", "is not JSON") from None
        try:
            return StoryRequest.model_validate(data), upload
        except PydanticValidationError as exc:
            if upload is not None:
                upload.discard()
            raise RequestValidationError(
                [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(include_url=False)]
            ) from None

    def plan_segments(body: StoryRequest) -> list[tuple[dict[str, Any], str]]:
        """Each segment as (generate-request params, workflow name), story-wide fields filled in."""
        shared = body.model_dump(
            include=set(body.model_fields_set) - {"image_url", "image_base64", "segments", "wait"}
        )
        out = []
        for segment in body.segments:
            fields = {**shared, **segment.model_dump(include=set(segment.model_fields_set))}
            as_request = GenerateVideoRequest.model_construct(**fields)
            out.append((as_request.params(), as_request.workflow or settings.default_workflow))
        return out

    @router.post(
        "/vastai/generate-story",
        status_code=202,
        response_model=StoryView,
        responses={200: {"model": StoryView}, 413: _ERROR, 422: _ERROR},
        tags=["stories"],
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/StoryRequest"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "request": {"type": "string", "description": "the StoryRequest as JSON"},
                                "image": {"type": "string", "format": "binary"},
                            },
                            "required": ["request", "image"],
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def generate_story(
        request: Request,
        prefer: str | None = Header(None),
        token: ApiToken | None = Depends(within_budget),
    ) -> JSONResponse:
        """Start a story: segment k+1 starts from segment k's last frame; one MP4 of all of them, each
        later segment's first frame dropped. 202 with `story_id`; `wait` holds the response like for jobs."""
        body, upload = await read_story_body(request)
        image: InputImage | None = upload
        try:
            given = [body.image_url is not None, body.image_base64 is not None, upload is not None]
            if sum(given) != 1:
                raise ValidationError(
                    "image_url", "give exactly one of image_url, image_base64 or an uploaded `image` part"
                )
            n = len(body.segments)
            if n < 1:
                raise ValidationError("segments", "give at least one segment")
            if n > settings.story_max_segments:
                raise ValidationError(
                    "segments",
                    f"at most {settings.story_max_segments} segments (got {n}; STORY_MAX_SEGMENTS)",
                )
            planned = plan_segments(body)
            for i, (_raw, wf_name) in enumerate(planned):  # unknown or unsuitable workflow: before fetching
                with field_prefix(f"segments[{i}]"):
                    wf = services.workflows(wf_name)
                    if "image" not in wf.bindings or not can_drop_leading_frames(wf):
                        raise ValidationError(
                            "workflow",
                            f"{wf_name} is not an image-to-video workflow a story can chain (it needs a "
                            "start image input and a video node that takes frames on `images`)",
                        )
            if image is None:
                image = (
                    await intake.from_url(body.image_url)
                    if body.image_url is not None
                    else await intake.from_base64(body.image_base64 or "")
                )
            segments = check_segments(planned, body, image)
        except BaseException:
            if image is not None:
                image.discard()
            raise
        path = await asyncio.to_thread(image.commit, intake.inputs_dir)
        story = await services.stories.submit(
            request={
                "image_sha256": image.sha256,
                "image_path": str(path),
                "image_size": [image.width, image.height],
                "seed": segments[0]["story_seed"],
                "segments": [{k: v for k, v in s.items() if k != "story_seed"} for s in segments],
            },
            segment_jobs=[None] * n,
            submitted_by=token.name if token else None,
            state=StoryState.QUEUED.value,
            stage="queued",
        )
        wait_s = _wait_seconds(body.wait, prefer)
        if wait_s > 0:
            story = await services.stories.wait(story.id, wait_s)
        out = await story_view(request, story)
        return JSONResponse(
            out, status_code=200 if story.terminal else 202, headers={"Location": out["status_url"]}
        )

    def check_segments(
        planned: list[tuple[dict[str, Any], str]], body: StoryRequest, image: InputImage
    ) -> list[dict[str, Any]]:
        """Every segment through the generate request's validation, with sizes pinned to segment 1's
        (all segments must be joinable) and seeds resolved (story seed + index unless given)."""
        story_seed = body.seed if "seed" in body.model_fields_set and body.seed != -1 else None
        if story_seed is None:
            story_seed = random.SystemRandom().randrange(0, SEED_SPACE)
        out: list[dict[str, Any]] = []
        first: Any = None
        for i, (raw, wf_name) in enumerate(planned):
            with field_prefix(f"segments[{i}]"):
                _wf, params = services.check_params(
                    raw, (image.width, image.height), workflow=wf_name, given={"image": "image_url"}
                )
                if first is None:
                    first = params
                else:
                    for name in ("width", "height", "fps"):
                        mine, theirs = getattr(params, name, None), getattr(first, name, None)
                        if mine != theirs:
                            raise ValidationError(
                                name,
                                f"must equal segment 0's {name} ({theirs}, got {mine}): the segments are "
                                "joined into one video without re-encoding",
                            )
            segment_seed = raw.get("seed")
            own_seed = body.segments[i].model_fields_set and "seed" in body.segments[i].model_fields_set
            if not own_seed or segment_seed is None:
                segment_seed = (story_seed + i) % SEED_SPACE
            pinned = {**raw, "seed": segment_seed}
            for name in ("width", "height"):
                if getattr(first, name, None) is not None:
                    pinned[name] = getattr(first, name)
            out.append({"raw_params": pinned, "workflow": wf_name, "story_seed": story_seed})
        return out

    @router.get(
        "/stories/{story_id}",
        response_model=StoryView,
        name="get_story",
        tags=["stories"],
        responses={404: _ERROR},
    )
    async def get_story(story_id: str, request: Request) -> dict[str, Any]:
        return await story_view(request, await services.groups.story(story_id))

    @router.get("/stories", response_model=StoryList, tags=["stories"])
    async def list_stories(
        request: Request,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=MAX_LIST_OFFSET),
    ) -> dict[str, Any]:
        stories = await services.groups.list_stories(limit=limit, offset=offset)
        return {"stories": [await story_view(request, s) for s in stories]}

    @router.delete("/stories/{story_id}", response_model=StoryView, tags=["stories"], responses={404: _ERROR})
    async def cancel_story(story_id: str, request: Request) -> dict[str, Any]:
        """Cancel: the running segment's prompt is stopped on the GPU, later segments are not made."""
        await services.groups.story(story_id)
        story = await services.stories.cancel(story_id)
        return await story_view(request, story)

    @router.get(
        "/stories/{story_id}/events",
        name="story_events",
        tags=["stories"],
        response_class=StreamingResponse,
        responses={404: _ERROR},
    )
    async def story_events(story_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events over the whole story: `snapshot`, then `progress` (segment i of n and that
        segment's own progress), then one `end` with the final story."""
        await services.groups.story(story_id)
        return event_stream(
            services.events,
            story_id,
            lambda: services.groups.story(story_id),
            lambda story: story_view(request, story),
        )

    # --- batches -----------------------------------------------------------------------------------
    async def batch_view(request: Request, batch: Any) -> dict[str, Any]:
        async def one(job: Job) -> dict[str, Any]:
            return await job_view(request, job)

        out = await services.batches.view(batch, one)
        out["status_url"] = public_url_for(request, services.settings, "get_batch", batch_id=batch.id)
        return out

    @router.post(
        "/vastai/generate-video/batch",
        status_code=202,
        response_model=BatchView,
        responses={413: _ERROR, 422: _ERROR},
        tags=["batches"],
    )
    async def generate_batch(
        body: BatchRequest, request: Request, token: ApiToken | None = Depends(within_budget)
    ) -> JSONResponse:
        """Submit 1..N generate requests at once. Every request is checked first (its image fetched and
        decoded); one bad request answers 422 naming `requests[i].<field>` and creates nothing. The jobs
        spread over the pool; one webhook is sent when the last one ends."""
        n = len(body.requests)
        if n < 1:
            raise ValidationError("requests", "give at least one request")
        if n > settings.batch_max_requests:
            raise ValidationError(
                "requests", f"at most {settings.batch_max_requests} requests (got {n}; BATCH_MAX_REQUESTS)"
            )
        if body.webhook_url is not None:
            await intake.check_url(body.webhook_url, "webhook_url")
        for i, req in enumerate(body.requests):  # everything that needs no network first
            with field_prefix(f"requests[{i}]"):
                if "wait" in req.model_fields_set:
                    raise ValidationError("wait", "is not used in a batch; follow GET /batches/{id} instead")
                # the file inputs the manifest declares (issue 11): present, single-sourced, taken
                given = given_fields(req)
                wf = resolve_workflow(
                    services.workflows, req.workflow or settings.default_workflow, req.params()
                )
                check_inputs(wf, given)
                services.check_params(req.params(), None, workflow=req.workflow, given=given)
        images: list[dict[str, Any] | None] = [None] * n
        givens: list[dict[str, str]] = [{} for _ in range(n)]
        prepared: list[Any] = []
        try:
            sem = asyncio.Semaphore(FETCH_CONCURRENCY)

            async def fetch(i: int, req: GenerateVideoRequest) -> None:
                async with sem:
                    with field_prefix(f"requests[{i}]"):
                        if req.webhook_url is not None:
                            await intake.check_url(req.webhook_url, "webhook_url")
                        images[i], givens[i] = await gather_inputs(req, {}, intake)

            results = await asyncio.gather(
                *(fetch(i, r) for i, r in enumerate(body.requests)), return_exceptions=True
            )
            for outcome in results:  # the first bad request, in request order
                if isinstance(outcome, BaseException):
                    raise outcome
            batch_id = new_batch_id()
            for i, req in enumerate(body.requests):
                files = dict(images[i] or {})
                images[i] = None  # prepare discards them itself when it refuses
                with field_prefix(f"requests[{i}]"):
                    prepared.append(
                        await services.prepare(
                            req.params(),
                            files.pop("image", None),
                            workflow=req.workflow,
                            webhook_url=req.webhook_url,
                            reuse_cached=req.reuse_cached,
                            tags={"batch_id": batch_id, "batch_index": i},
                            files=files,
                            given=givens[i],
                        )
                    )
        except BaseException:
            for staged in [*images, *(p.files for p in prepared)]:
                for f in (staged or {}).values():
                    f.discard()
            raise
        submitted_by = token.name if token else None
        job_ids = []
        for p in prepared:
            job = await services.create(p, submitted_by=submitted_by)
            job_ids.append(job.id)
        batch = await services.groups.create_batch(
            id=batch_id, job_ids=job_ids, webhook_url=body.webhook_url, submitted_by=submitted_by
        )
        await services.batches.created(batch.id)
        batch = await services.groups.batch(batch.id)
        out = await batch_view(request, batch)
        return JSONResponse(out, status_code=202, headers={"Location": out["status_url"]})

    @router.get(
        "/batches/{batch_id}",
        response_model=BatchView,
        name="get_batch",
        tags=["batches"],
        responses={404: _ERROR},
    )
    async def get_batch(batch_id: str, request: Request) -> dict[str, Any]:
        return await batch_view(request, await services.groups.batch(batch_id))

    # --- fleet -------------------------------------------------------------------------------------
    @router.get("/instances", response_model=InstanceList, tags=["fleet"])
    async def list_instances() -> dict[str, Any]:
        """Every live instance: state, GPU, $/h, uptime, money spent so far, workflows held, current job."""
        return {"instances": await services.fleet.list(), "simulated": settings.simulated}

    @router.get(
        "/instances/{instance_id}", response_model=InstanceView, tags=["fleet"], responses={404: _ERROR}
    )
    async def get_instance(instance_id: str) -> dict[str, Any]:
        """One instance, with provisioning progress per model file (bytes done and total, verified)."""
        return await services.fleet.get(instance_id)

    @router.post(
        "/instances/{instance_id}/verify",
        response_model=VerifyReport,
        tags=["fleet"],
        responses={404: _ERROR, 409: _ERROR, 400: _ERROR, 503: _ERROR},
    )
    async def verify_instance(
        instance_id: str,
        refetch: bool = Query(False, description="Delete and download again the files that differ"),
    ) -> dict[str, Any]:
        """Re-hash every model file on the machine (sha256, over SSH) against the pinned hashes."""
        return await services.fleet.verify(instance_id, refetch=refetch)

    @router.delete(
        "/instances/{instance_id}",
        response_model=DestroyReport,
        tags=["fleet"],
        responses={404: _ERROR, 409: _ERROR, 400: _ERROR, 503: _ERROR},
    )
    async def destroy_instance(instance_id: str) -> dict[str, Any]:
        """Destroy the instance; the jobs on it go back to the queue and run elsewhere."""
        return await services.fleet.destroy(instance_id)

    @router.get("/spend", response_model=SpendView, tags=["fleet"])
    async def spend() -> dict[str, Any]:
        """Money spent today and this month (UTC), the cap, per instance and per workflow."""
        return await services.fleet.spend()

    return router


__all__ = ["group_router", "install_handlers"]
