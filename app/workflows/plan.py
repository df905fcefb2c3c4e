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
from app.workflows.features import CAMERA_MOVES, QUALITY_PRESETS, add_phrase
from app.workflows.inputs import API_INPUT_FIELDS, INPUT_NAMES
from app.workflows.model import Workflow
from app.workflows.params import WorkflowParams

Lookup = Callable[[str], Workflow]
# Request fields the planner consumes (they are not graph parameters themselves).
FEATURE_FIELDS = ("camera_motion", "quality_preset", "enhance_prompt")


@dataclass(frozen=True)
class Plan:
    """What a request resolves to: the workflow, its validated params and the file inputs it takes."""

    workflow: Workflow
    params: WorkflowParams
    inputs: tuple[str, ...]  # the file inputs given (image, end_image, audio)
    audio_seconds: float | None = None
    applied: dict[str, Any] = field(default_factory=dict)  # what request features did (reported)
    camera_pose: str | None = None  # bound to the workflow's camera_pose input

    def request_record(self) -> dict[str, Any]:
        """The plan's facts a job keeps beside its params (so a retry renders the same graph)."""
        out: dict[str, Any] = {"inputs": list(self.inputs)}
        if self.audio_seconds is not None:
            out["audio_seconds"] = self.audio_seconds
        if self.camera_pose is not None:
            out["camera_pose"] = self.camera_pose
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
                f"{prefix}{url}",
                f"workflow {wf.name} needs {spec.name.replace('_', ' ')}: give exactly one of {url} or {b64}",
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
    enhanced_prompt: str | None = None,
    enhanced_by: str | None = None,
) -> Plan:
    """Resolve a request. `given` = the file inputs present (input name -> request field); `image_size`
    the start image's size (for auto width/height); `audio_seconds` the measured audio duration.
    `prefix` names the request inside a group (`segments[2].`, `requests[0].`) in errors.
    `enhanced_prompt`: the prompt `enhance_prompt` produced (see `app.workflows.enhance`), used as is.

    Order: quality_preset (values fill fields the request left out; it may switch the workflow), then
    camera_motion (a pose, or a phrase added to the prompt), then validation against the final workflow."""
    try:
        return _plan(
            lookup,
            workflow,
            raw,
            dict(given or {}),
            image_size,
            audio_seconds,
            max_audio_seconds,
            enhanced_prompt,
            enhanced_by,
        )
    except ValidationError as exc:
        if prefix:
            raise ValidationError(f"{prefix}{exc.field}", exc.reason) from None
        raise


def resolve_workflow(lookup: Lookup, workflow: str, raw: Mapping[str, Any]) -> Workflow:
    """The workflow a request runs on (its quality_preset may name another one)."""
    wf = lookup(workflow)
    spec = _preset(wf, raw.get("quality_preset"))
    return lookup(spec.workflow) if spec is not None and spec.workflow else wf


def _preset(wf: Workflow, name: Any) -> Any:
    if name is None:
        return None
    if not isinstance(name, str) or name not in QUALITY_PRESETS:
        raise ValidationError("quality_preset", f"must be one of {', '.join(QUALITY_PRESETS)} (got {name!r})")
    spec = wf.presets.get(name)
    if spec is None:
        has = ", ".join(wf.presets) or "none"
        raise ValidationError("quality_preset", f"workflow {wf.name} has no preset {name!r} (it has: {has})")
    return spec


def _plan(
    lookup: Lookup,
    workflow: str,
    raw_in: Mapping[str, Any],
    given: dict[str, str],
    image_size: tuple[int, int] | None,
    audio_seconds: float | None,
    max_audio_seconds: float | None,
    enhanced_prompt: str | None,
    enhanced_by: str | None = None,
) -> Plan:
    raw = {k: v for k, v in raw_in.items() if k not in FEATURE_FIELDS}
    wf = lookup(workflow)
    applied: dict[str, Any] = {}

    spec = _preset(wf, raw_in.get("quality_preset"))
    if spec is not None:
        if spec.workflow:
            wf = lookup(spec.workflow)
        values = {k: v for k, v in spec.values.items() if k in wf.limits}
        chosen = {k: v for k, v in values.items() if raw.get(k) is None}
        raw.update(chosen)
        applied["quality_preset"] = {
            "name": spec.name,
            "workflow": wf.name,
            "values": chosen,
            "overridden_by_request": sorted(k for k in values if k not in chosen),
        }

    camera_pose: str | None = None
    phrase: str | None = None
    move = raw_in.get("camera_motion")
    if move is not None:
        if not isinstance(move, str) or move not in CAMERA_MOVES:
            raise ValidationError("camera_motion", f"must be one of {', '.join(CAMERA_MOVES)} (got {move!r})")
        if move not in wf.camera.moves:
            raise ValidationError(
                "camera_motion",
                f"workflow {wf.name} cannot do {move}; it can do: {', '.join(wf.camera.moves)}",
            )
        how, value = wf.camera.how(move)
        if how == "pose":
            camera_pose = value
            applied["camera_motion"] = {"move": move, "pose": value}
        else:
            phrase = value
            applied["camera_motion"] = {"move": move, "phrase": value}

    enhance = raw_in.get("enhance_prompt")
    if enhance not in (None, False, True):
        raise ValidationError("enhance_prompt", f"must be true or false (got {enhance!r})")

    check_inputs(wf, given)
    if audio_seconds is not None and "audio" in given:
        check_audio_seconds(wf, audio_seconds, max_audio_seconds, given["audio"])
    params = wf.validate(raw, image_size if "image" in given else None)  # checks the prompt as given
    if enhance and enhanced_prompt is not None:
        prompt = enhanced_prompt
        applied["enhance_prompt"] = {"from": params.prompt, "by": enhanced_by or "local"}
    else:
        prompt = add_phrase(params.prompt, phrase) if phrase else params.prompt
    if prompt != params.prompt:
        params = wf.validate({**raw, "prompt": prompt}, image_size if "image" in given else None)
    # how often the repeated block runs (S2V: Extend chunks for the audio)
    if getattr(wf, "repeat", None) is not None:
        count = int(wf.derived_values(params, audio_seconds if "audio" in given else None)[wf.repeat.count])
        if not 0 <= count <= wf.repeat.max:
            raise ValidationError(
                given.get("audio", "params"),
                f"needs {count} repeats of the workflow's block; at most {wf.repeat.max}",
            )
        applied["repeat"] = {"block": list(wf.repeat.nodes), "count": count}
    return Plan(
        workflow=wf,
        params=params,
        inputs=tuple(n for n in INPUT_NAMES if n in given),
        audio_seconds=audio_seconds if "audio" in given else None,
        applied=applied,
        camera_pose=camera_pose,
    )


def enhancement_inputs(plan: Plan) -> tuple[str | None, tuple[str, ...]]:
    """(camera phrase, aesthetic terms) a planned request hands to `enhance_prompt`."""
    camera = plan.applied.get("camera_motion") or {}
    preset = plan.applied.get("quality_preset") or {}
    aesthetic: tuple[str, ...] = ()
    if preset:
        source = plan.workflow.presets.get(preset["name"])
        aesthetic = source.aesthetic if source is not None else ()
    return camera.get("phrase"), aesthetic
