"""One planning step for every way a job is asked for (API, multipart upload, CLI, story segment, batch
request): which workflow runs, with which validated parameters, taking which files.

`plan_request` is pure (no I/O): callers measure their files first (image size, audio duration) and pass
what they were given; the plan says what runs or raises `ValidationError` naming the offending field, so
nothing is created for a refused request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.errors import ValidationError
from app.workflows.inputs import API_INPUT_FIELDS, INPUT_NAMES
from app.workflows.model import Workflow
from app.workflows.params import WorkflowParams

Lookup = Callable[[str], Workflow]


@dataclass(frozen=True)
class Plan:
    """What a request resolves to: the workflow, its validated params and the file inputs it takes."""

    workflow: Workflow
    params: WorkflowParams
    inputs: tuple[str, ...]  # the file inputs given (image, end_image, audio)
    audio_seconds: float | None = None
    applied: dict[str, Any] = field(default_factory=dict)  # what request features did (reported)

    def request_record(self) -> dict[str, Any]:
        """The plan's facts a job keeps beside its params (so a retry renders the same graph)."""
        out: dict[str, Any] = {"inputs": list(self.inputs)}
        if self.audio_seconds is not None:
            out["audio_seconds"] = self.audio_seconds
        if self.applied:
            out["applied"] = dict(self.applied)
        return out


def _field_label(name: str, given: Mapping[str, str]) -> str:
    return given.get(name) or API_INPUT_FIELDS[name][0]


def check_inputs(wf: Workflow, given: Mapping[str, str], *, prefix: str = "") -> None:
    """Every required input is given and every given input is taken; `given` maps an input name to the
    request field that carried it (`image_url`, `audio_base64`, an uploaded `audio` part...)."""
    for name in given:
        if name not in INPUT_NAMES:
            raise ValidationError(f"{prefix}{name}", f"unknown input (known: {', '.join(INPUT_NAMES)})")
    for spec in wf.inputs.all:
        if spec.name in given and not spec.taken:
            takes = ", ".join(wf.inputs.taken) or "no files (text only)"
            raise ValidationError(
                f"{prefix}{_field_label(spec.name, given)}",
                f"workflow {wf.name} takes no {spec.name.replace('_', ' ')} (it takes: {takes})",
            )
    for spec in wf.inputs.all:
        if spec.required and spec.name not in given:
            url, b64 = API_INPUT_FIELDS[spec.name]
            raise ValidationError(
                f"{prefix}{url}", f"workflow {wf.name} needs {spec.name.replace('_', ' ')}: give {url} or {b64}"
            )


def check_audio_seconds(wf: Workflow, seconds: float, max_seconds: float | None, field_name: str) -> None:
    limits = [s for s in (wf.inputs.max_audio_seconds, max_seconds) if s is not None]
    if limits and seconds > min(limits):
        raise ValidationError(
            field_name, f"the audio is {seconds:.2f} s long; at most {min(limits):g} s is allowed"
        )


def plan_request(
    lookup: Lookup,
    workflow: str,
    raw: Mapping[str, Any],
    *,
    given: Mapping[str, str] | None = None,
    image_size: tuple[int, int] | None = None,
    audio_seconds: float | None = None,
    max_audio_seconds: float | None = None,
    prefix: str = "",
) -> Plan:
    """Resolve a request. `given` = the file inputs present (input name -> request field); `image_size`
    the start image's size (for auto width/height); `audio_seconds` the measured audio duration.
    `prefix` names the request inside a group (`segments[2].`, `requests[0].`) in errors."""
    given = dict(given or {})
    wf = lookup(workflow)
    try:
        check_inputs(wf, given)
        if audio_seconds is not None and "audio" in given:
            check_audio_seconds(wf, audio_seconds, max_audio_seconds, given["audio"])
        params = wf.validate(raw, image_size if "image" in given else None)
    except ValidationError as exc:
        if prefix:
            raise ValidationError(f"{prefix}{exc.field}", exc.reason) from None
        raise
    return Plan(
        workflow=wf,
        params=params,
        inputs=tuple(n for n in INPUT_NAMES if n in given),
        audio_seconds=audio_seconds if "audio" in given else None,
    )
