"""Request parameters of a workflow: their limits (from the manifest) and strict validation.

ComfyUI accepts graphs that produce garbage or crash late (width 650, 80 frames); we reject such requests
up front with a message that names the field, so the API can answer 422 and nobody pays for a GPU to
find out. The field names and their types are the API's; every limit and default is the manifest's.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from app.errors import ValidationError, ValidationErrors

# The API's request fields and the type each one has. Which of them a workflow accepts, their limits
# and defaults come from its manifest ([params.<field>]).
API_FIELDS: dict[str, Literal["string", "int", "float"]] = {
    "prompt": "string",
    "negative_prompt": "string",
    "num_frames": "int",
    "width": "int",
    "height": "int",
    "steps": "int",
    "cfg_scale": "float",
    "seed": "int",
    "fps": "int",
    "crf": "int",
    "output_format": "string",
}

# A number written in a string: ASCII digits, optional sign, fraction and exponent; nothing else.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)

SEED_RANDOM = -1
SEED_MAX = 2**64 - 1  # ComfyUI's noise_seed / seed maximum
SEED_SPACE = 2**53  # resolved seeds stay exact in JSON numbers (JavaScript clients)


@dataclass(frozen=True)
class ParamSpec:
    """Limits and default of one request field, as declared in the manifest."""

    name: str
    type: Literal["string", "int", "float"]
    default: Any = None
    min: float | None = None
    max: float | None = None
    multiple_of: int | None = None
    remainder: int = 0
    min_length: int | None = None
    max_length: int | None = None
    # request value -> the value bound into the graph (e.g. "webm" -> "video/webm"); only these values
    choices: dict[str, Any] | None = None

    @property
    def required(self) -> bool:
        return self.default is None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and not (k == "remainder" and v == 0)}

    # -- coercion ----------------------------------------------------------------------------------
    def coerce(self, value: Any) -> Any:
        """The value as the declared type, within limits; `ValidationError(name, ...)` otherwise."""
        if self.type == "string":
            text = self._check_string(value)
            if self.choices is not None and text not in self.choices:
                raise ValidationError(self.name, f"must be one of {', '.join(self.choices)} (got {text!r})")
            return text
        number = self._to_number(value)
        if self.name == "seed" and not SEED_RANDOM <= number <= SEED_MAX:
            # whatever the manifest says: -1 means random, and samplers take 0..2**64-1
            raise ValidationError(
                self.name, f"must be -1 (random) or between 0 and {SEED_MAX} (got {number})"
            )
        self._check_range(number)
        if self.type == "int":
            self._check_step(number)
        return number

    def _check_string(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(self.name, f"must be a string (got {type(value).__name__})")
        if "\x00" in value:
            raise ValidationError(self.name, "must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): nothing downstream can send it
            raise ValidationError(self.name, "must be valid Unicode text (lone surrogate)") from None
        if self.min_length and len(value.strip()) < self.min_length:
            raise ValidationError(
                self.name,
                "must not be empty"
                if self.min_length == 1
                else (f"must be at least {self.min_length} characters"),
            )
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(
                self.name, f"is too long ({len(value)} characters; at most {self.max_length})"
            )
        return value

    def _to_number(self, value: Any) -> int | float:
        kind = "an integer" if self.type == "int" else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValidationError(self.name, f"must be {kind} (got {type(value).__name__})")
        if isinstance(value, str):
            text = value.strip()
            if not _NUMBER_RE.fullmatch(text):  # int()/float() also take "8_32", non-ASCII digits
                raise ValidationError(self.name, f"must be {kind} (got {value!r})")
            try:
                number: int | float = int(text) if self.type == "int" else float(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    raise ValidationError(self.name, f"must be {kind} (got {value!r})") from None
        else:
            number = value
        if isinstance(number, float) and not math.isfinite(number):
            raise ValidationError(self.name, f"must be a finite number (got {value!r})")
        if self.type == "int":
            if isinstance(number, float):
                if not number.is_integer():
                    raise ValidationError(self.name, f"must be an integer (got {value!r})")
                number = int(number)
            return number
        return float(number)

    def _check_range(self, number: int | float) -> None:
        low, high = self.min, self.max
        if (low is not None and number < low) or (high is not None and number > high):
            if low is not None and high is not None:
                bounds = f"between {_fmt(low)} and {_fmt(high)}"
            elif low is not None:
                bounds = f"at least {_fmt(low)}"
            else:
                bounds = f"at most {_fmt(high)}"
            raise ValidationError(self.name, f"must be {bounds} (got {_fmt(number)})")

    def _check_step(self, number: int) -> None:
        m = self.multiple_of
        if not m or m == 1 or number % m == self.remainder % m:
            return
        below = number - ((number - self.remainder) % m)
        options = [v for v in (below, below + m) if self.is_valid(v)]
        hint = f"; nearest valid: {' or '.join(str(v) for v in options)}" if options else ""
        rule = f"a multiple of {m}" if self.remainder % m == 0 else f"{m}n+{self.remainder % m}"
        raise ValidationError(self.name, f"must be {rule} (got {number}{hint})")

    def is_valid(self, number: int | float) -> bool:
        if self.min is not None and number < self.min:
            return False
        if self.max is not None and number > self.max:
            return False
        m = self.multiple_of
        return not (self.type == "int" and m and m > 1 and number % m != self.remainder % m)

    def snap(self, number: float) -> int:
        """The valid integer value nearest to `number` (for sizes derived from an image's aspect)."""
        m = self.multiple_of or 1
        r = self.remainder % m
        candidate = math.floor((number - r) / m + 0.5) * m + r
        if self.min is not None and candidate < self.min:
            candidate = math.ceil((self.min - r) / m) * m + r
        if self.max is not None and candidate > self.max:
            candidate = math.floor((self.max - r) / m) * m + r
        return candidate


def _fmt(number: float) -> str:
    return str(number)


@dataclass(frozen=True)
class WorkflowParams:
    """Validated request parameters. A field the workflow does not use is None.

    `seed` -1 means "pick one": call `with_resolved_seed()` before rendering and report the result.
    """

    prompt: str
    negative_prompt: str | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    fps: int | None = None
    crf: int | None = None
    output_format: str | None = None

    @property
    def seed_resolved(self) -> bool:
        return self.seed is None or self.seed >= 0

    def with_resolved_seed(self, rng: random.Random | None = None) -> WorkflowParams:
        """A copy with a concrete seed in [0, 2**53) if the seed was -1 (random); unchanged otherwise."""
        if self.seed_resolved:
            return self
        rng = rng or random.SystemRandom()
        return replace(self, seed=rng.randrange(0, SEED_SPACE))

    def normalized(self) -> dict[str, Any]:
        """The fields that are set, typed canonically (sorted keys), for cache keys and job records."""
        out: dict[str, Any] = {}
        for key, value in sorted(asdict(self).items()):
            if value is None:
                continue
            out[key] = float(value) if API_FIELDS[key] == "float" else value
        return out


def validate_params(
    workflow_name: str,
    specs: Mapping[str, ParamSpec],
    raw: Mapping[str, Any],
    image_size: tuple[int, int] | None,
    auto_area: int | None,
) -> WorkflowParams:
    """Check `raw` request fields against the workflow's specs; defaults fill what is missing."""
    if not isinstance(raw, Mapping):
        raise ValidationError("params", f"must be an object (got {type(raw).__name__})")
    errors: list[ValidationError] = []  # every bad field is reported at once, not only the first
    for key in raw:
        if key not in API_FIELDS:
            errors.append(ValidationError(str(key), f"unknown field; accepted fields: {', '.join(specs)}"))
        elif key not in specs and raw[key] is not None:
            errors.append(ValidationError(key, f"is not used by workflow {workflow_name}"))

    given = {k: v for k, v in raw.items() if v is not None}
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name in given:
            try:
                values[name] = spec.coerce(given[name])
            except ValidationError as exc:
                errors.append(exc)
        elif name in ("width", "height"):
            continue  # below: they may come from the image
        elif spec.required:
            errors.append(ValidationError(name, "is required"))
        else:
            values[name] = spec.default
    ValidationErrors.raise_if(errors)

    _fill_size(values, specs, image_size, auto_area)
    return WorkflowParams(**values)


def _fill_size(
    values: dict[str, Any],
    specs: Mapping[str, ParamSpec],
    image_size: tuple[int, int] | None,
    auto_area: int | None,
) -> None:
    """Missing width/height follow the image's aspect ratio at the manifest's pixel area."""
    w_spec, h_spec = specs.get("width"), specs.get("height")
    missing = [s for s in (w_spec, h_spec) if s is not None and s.name not in values]
    if not missing:
        return
    aspect: float | None = None
    if image_size is not None:
        try:
            iw, ih = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ValidationError("image", f"size must be (width, height) (got {image_size!r})") from None
        if iw <= 0 or ih <= 0:
            raise ValidationError("image", f"has no pixels ({iw}x{ih})")
        aspect = iw / ih
    if aspect is None or w_spec is None or h_spec is None:
        for spec in missing:
            if spec.required:
                raise ValidationError(spec.name, "is required")
            values[spec.name] = spec.default
        return
    if "width" in values:
        values["height"] = h_spec.snap(values["width"] / aspect)
    elif "height" in values:
        values["width"] = w_spec.snap(values["height"] * aspect)
    else:
        area = auto_area or (w_spec.default or 0) * (h_spec.default or 0)
        if not area:
            raise ValidationError("width", "is required (the workflow declares no default size)")
        values["width"] = w_spec.snap(math.sqrt(area * aspect))
        values["height"] = h_spec.snap(math.sqrt(area / aspect))


def request_from_cli(
    *,
    prompt: Any,
    negative_prompt: Any = None,
    frames: Any = None,
    width: Any = None,
    height: Any = None,
    steps: Any = None,
    cfg: Any = None,
    seed: Any = None,
    fps: Any = None,
    crf: Any = None,
    output_format: Any = None,
    camera_motion: Any = None,
    quality_preset: Any = None,
    enhance_prompt: bool = False,
) -> dict[str, Any]:
    """The CLI's option names (`--frames`, `--cfg`, ...) as API request fields; options not given are left
    out so the workflow's defaults apply. One mapping for every command that takes these options."""
    raw = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "num_frames": frames,
        "width": width,
        "height": height,
        "steps": steps,
        "cfg_scale": cfg,
        "seed": seed,
        "fps": fps,
        "crf": crf,
        "output_format": output_format,
        "camera_motion": camera_motion,
        "quality_preset": quality_preset,
        "enhance_prompt": True if enhance_prompt else None,
    }
    return {k: v for k, v in raw.items() if v is not None}
