"""Request and response bodies of the story, batch and fleet routes (what /docs shows; the client's types).

A story segment is "a normal generate request minus the image": its model is derived from
`GenerateVideoRequest` field by field, so a field added there (a camera move, a quality preset) is a
segment field too, with the same type and description, without story-specific code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.api.schemas import EXAMPLE_IMAGE_BASE64, GenerateVideoRequest, JobError, JobView

# as for a generate request: JSON types as documented, unknown fields refused, no NaN or Infinity
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

IMAGE_FIELDS = ("image_url", "image_base64")
# Fields of a generate request that make no sense per segment: the image is the previous segment's last
# frame, and the story as a whole is waited on (no per-segment webhook or wait).
# Other file inputs and the container do not apply either: segments are image-to-video clips joined
# into one MP4 (issue 11).
NOT_PER_SEGMENT = (
    *IMAGE_FIELDS,
    "end_image_url",
    "end_image_base64",
    "audio_url",
    "audio_base64",
    "output_format",
    "webhook_url",
    "wait",
    "reuse_cached",
)
# The fields a story may set once for all its segments (a segment's own value wins).
NOT_SHARED = (*NOT_PER_SEGMENT, "prompt")


def _fields(exclude: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: (info.annotation, info)
        for name, info in GenerateVideoRequest.model_fields.items()
        if name not in exclude
    }


StorySegment = create_model(  # type: ignore[call-overload]
    "StorySegment",
    __config__=STRICT,
    __doc__="One segment: a generate request without an image (it starts from the previous segment's "
    "last frame). `workflow` must be an image-to-video workflow.",
    **_fields(NOT_PER_SEGMENT),
)

_StoryShared = create_model(  # type: ignore[call-overload]
    "_StoryShared", __config__=STRICT, **_fields(NOT_SHARED)
)


class StoryRequest(_StoryShared):  # type: ignore[misc, valid-type]
    """A story: one start image and 1..N segments, joined into one MP4. Fields besides `segments` and the
    image apply to every segment that does not set its own. `seed` is the story's seed: a segment
    without its own seed uses story seed + its index, so the same story again is a cache hit."""

    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "examples": [
                {
                    "image_base64": EXAMPLE_IMAGE_BASE64,
                    "num_frames": 17,
                    "segments": [{"prompt": "the camera pushes in"}, {"prompt": "the camera pulls back"}],
                }
            ]
        },
    )

    image_url: str | None = Field(None, description="http(s) URL of the start image (public addresses only)")
    image_base64: str | None = Field(None, description="The start image as base64 (a data: URL is fine)")
    segments: list[StorySegment] = Field(..., description="The clips, in order")  # type: ignore[valid-type]
    wait: bool | float = Field(
        False, description="true: hold the response until the story ends (bounded); a number: up to N s"
    )


class StorySegmentView(BaseModel):
    index: int
    job_id: str | None = None
    state: str
    stage: str | None = None
    progress: float = 0.0
    workflow: str | None = None
    prompt: str | None = None
    seed: int | None = None
    num_frames: int | None = None
    frames_in_story: int | None = None
    first_frame_dropped: bool = False
    video_url: str | None = None
    last_frame_url: str | None = None
    cached: bool | None = None
    timings: dict[str, float] = {}
    cost_usd: float | None = None
    error: JobError | None = None
    result: dict[str, Any] | None = None


class StoryView(BaseModel):
    story_id: str
    state: str
    stage: str | None = None
    progress: float = 0.0
    segment: int | None = None
    segments_total: int
    segments: list[StorySegmentView]
    result: dict[str, Any] | None = None
    error: JobError | None = None
    cost_usd: float | None = None
    seed: int | None = None
    submitted_by: str | None = Field(None, description="Name of the API token that submitted the story")
    created_at: float
    updated_at: float
    finished_at: float | None = None
    status_url: str | None = None
    events_url: str | None = None


class StoryList(BaseModel):
    stories: list[StoryView]


class BatchRequest(BaseModel):
    """1..N generate requests checked together: one bad request refuses the batch (nothing created)."""

    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "examples": [
                {
                    "requests": [
                        {"image_base64": EXAMPLE_IMAGE_BASE64, "prompt": "waves roll in", "num_frames": 17},
                        {"image_base64": EXAMPLE_IMAGE_BASE64, "prompt": "clouds drift by", "num_frames": 17},
                    ]
                }
            ]
        },
    )

    requests: list[GenerateVideoRequest] = Field(..., description="Each a normal generate request")
    webhook_url: str | None = Field(
        None, description="POSTed one signed Standard Webhooks message when every job has ended"
    )


class BatchView(BaseModel):
    batch_id: str
    state: str
    total: int
    counts: dict[str, int]
    created_at: float
    finished_at: float | None = None
    cost_usd: float = 0.0
    submitted_by: str | None = Field(None, description="Name of the API token that submitted the batch")
    webhook: dict[str, Any] | None = None
    jobs: list[JobView | dict[str, Any]]
    status_url: str | None = None


class ProvisioningFile(BaseModel):
    name: str
    folder: str
    bytes_done: int
    bytes_total: int | None = None
    state: str
    verified: bool
    sha256: str | None = None
    retries: int = 0
    error: str | None = None


class ProvisioningView(BaseModel):
    workflow: str
    state: str
    started_at: float
    finished_at: float | None = None
    error: str | None = None
    bytes_done: int
    bytes_total: int
    files_verified: int
    files: list[ProvisioningFile]
    custom_nodes: dict[str, str] = {}


class InstanceView(BaseModel):
    id: str
    label: str
    provider: str
    state: str
    gpu_name: str | None = None
    price_per_hour: float
    uptime_s: float
    spent_usd: float
    in_pool: bool
    workflows: list[str]
    current_job: str | None = None
    jobs: list[str] = []
    jobs_served: int | None = None
    paused: str | None = None
    created_at: float
    ready_at: float | None = None
    last_used_at: float | None = None
    simulated: bool = False
    machine_id: str | None = None
    offer_id: str | None = None
    ssh: str | None = None
    status_msg: str | None = None
    meta: dict[str, Any] | None = None
    provisioning: list[ProvisioningView] | None = None


class InstanceList(BaseModel):
    instances: list[InstanceView]
    simulated: bool = False


class FileCheckView(BaseModel):
    name: str
    folder: str
    expected_sha256: str | None = None
    actual_sha256: str | None = None
    size: int | None = None
    status: str
    refetched: bool = False
    ok: bool


class WorkflowCheck(BaseModel):
    workflow: str
    ok: bool
    files: list[FileCheckView]


class VerifyReport(BaseModel):
    instance_id: str
    ok: bool
    refetch: bool
    seconds: float
    workflows: list[WorkflowCheck]


class DestroyReport(BaseModel):
    instance_id: str
    destroyed: bool
    requeued_jobs: list[dict[str, Any]]


class SpendView(BaseModel):
    currency: str = "USD"
    today_usd: float
    month_usd: float
    day_start: str
    month_start: str
    cap_usd: float
    projected_usd: float
    live_per_hour_usd: float
    per_instance: list[dict[str, Any]]
    per_workflow: list[dict[str, Any]]
    unattributed_month_usd: float
