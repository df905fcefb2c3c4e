"""Request and response bodies of the HTTP API (what /docs shows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The largest `offset` a list route takes: beyond any real table, and within what every database's
# OFFSET accepts (a larger integer would be an error there, not an empty page).
MAX_LIST_OFFSET = 1_000_000_000

# A 64x48 PNG: the request example in /docs works as it is ("Try it out"), and API fuzzing starts from it.
EXAMPLE_IMAGE_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAAAwCAIAAAAuKetIAAAAVklEQVR42u3PMQ3AIABFwV/UIKGqmJHQuaqQgwRmDJCQ3Bvfds8cNcn79+yN9l"
    "3xSy4PAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA4FwLIowYggaW24sAAAAASUVORK5CYII="
)


class GenerateVideoRequest(BaseModel):
    """One video request. The workflow's manifest says which files it takes: a start image (`image_url` or
    `image_base64`), an end image (`end_image_url` / `end_image_base64`), audio (`audio_url` /
    `audio_base64`); at most one source per file. multipart/form-data works too (file parts `image`,
    `end_image`, `audio`)."""

    # strict: JSON types as documented (no true -> 1.0, no "81" -> 81); unknown fields are refused;
    # NaN and Infinity (which Python's JSON parser accepts) are not numbers a render can use
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {"image_base64": EXAMPLE_IMAGE_BASE64, "prompt": "the lighthouse beam sweeps over the waves"},
                {
                    "image_base64": EXAMPLE_IMAGE_BASE64,
                    "prompt": "the camera slowly pushes in",
                    "num_frames": 33,
                    "seed": 42,
                    "wait": False,
                },
            ]
        },
    )

    image_url: str | None = Field(None, description="http(s) URL of the input image (public addresses only)")
    image_base64: str | None = Field(None, description="The input image as base64 (a data: URL is fine)")
    end_image_url: str | None = Field(
        None, description="http(s) URL of the last frame (first-last-frame workflows)"
    )
    end_image_base64: str | None = Field(None, description="The last frame as base64")
    audio_url: str | None = Field(None, description="http(s) URL of the audio (sound-to-video workflows)")
    audio_base64: str | None = Field(None, description="The audio (MP3, WAV, FLAC, OGG, M4A) as base64")
    prompt: str = Field(..., description="What should happen in the video")
    # None = the workflow's default (its manifest); a field the workflow does not take is refused
    negative_prompt: str | None = Field(None, description="Default: the workflow's negative prompt")
    num_frames: int | None = Field(None, description="4n+1 frames. Default: the workflow's (81)")
    width: int | None = Field(None, description="Default: the image's aspect ratio at 480p, multiple of 16")
    height: int | None = None
    steps: int | None = Field(None, description="Default: the workflow's (4 with the LightX2V LoRAs)")
    cfg_scale: float | None = Field(None, description="Default: the workflow's")
    seed: int | None = Field(None, description="-1 = random (the seed used is reported). Default: -1")
    fps: int | None = Field(None, description="Default: the workflow's (16; 24 for the 5B)")
    crf: int | None = Field(None, description="Encoder quality, lower = better (default 18; 0-51)")
    output_format: str | None = Field(None, description="mp4 (H.264, default) or webm (VP9)")
    camera_motion: str | None = Field(
        None,
        description="pan_left, pan_right, pan_up, pan_down, zoom_in, zoom_out, dolly_in, dolly_out, "
        "orbit_left, "
        "orbit_right, crane_up, crane_down, static, handheld (a camera pose where the workflow has one, "
        "otherwise prompt phrasing)",
    )
    quality_preset: str | None = Field(
        None, description="draft, standard, high or ultra (the workflow's manifest maps it; your fields win)"
    )
    enhance_prompt: bool = Field(
        False,
        description="Restructure the prompt (subject, scene, motion, aesthetic, style) before rendering",
    )
    workflow: str | None = Field(None, description="Default: the server's DEFAULT_WORKFLOW")
    webhook_url: str | None = Field(None, description="POSTed a signed Standard Webhooks message when done")
    reuse_cached: bool = Field(
        False,
        description="With seed -1: answer with the latest stored result for the same inputs (any seed) "
        "instead of rendering a new random seed",
    )
    wait: bool | float = Field(
        False, description="true: hold the response until the job ends (bounded); a number: up to N seconds"
    )

    def params(self) -> dict[str, Any]:
        keys = (
            "prompt",
            "negative_prompt",
            "num_frames",
            "width",
            "height",
            "steps",
            "cfg_scale",
            "seed",
            "fps",
            "crf",
            "output_format",
            "camera_motion",
            "quality_preset",
        )
        out = {k: getattr(self, k) for k in keys}
        if self.enhance_prompt:
            out["enhance_prompt"] = True
        return {k: v for k, v in out.items() if v is not None}


class JobError(BaseModel):
    message: str
    kind: str | None = None


class JobView(BaseModel):
    job_id: str
    state: str
    stage: str | None = None
    progress: float = 0.0
    queue_position: int | None = None
    workflow: str
    params: dict[str, Any] | None = None
    created_at: float
    updated_at: float
    finished_at: float | None = None
    attempts: int = 0
    submitted_by: str | None = Field(None, description="Name of the API token that submitted the job")
    result: dict[str, Any] | None = None
    error: JobError | None = None
    timings: dict[str, float] = {}
    cost_usd: float | None = None
    webhook: dict[str, Any] | None = None
    status_url: str | None = None
    events_url: str | None = None


class JobList(BaseModel):
    jobs: list[JobView]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[FieldError] = []
