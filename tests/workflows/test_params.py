"""Request validation of the shipped workflow: stricter than ComfyUI, and every error names its field."""

from __future__ import annotations

import random

import pytest

from app.config import get_settings
from app.errors import ValidationError
from app.workflows import WorkflowParams, get_workflow
from tests.workflows.conftest import SHIPPED


@pytest.fixture
def wf():
    return get_workflow(SHIPPED, get_settings())


def _error(wf, raw, image_size=None) -> ValidationError:
    with pytest.raises(ValidationError) as exc:
        wf.validate(raw, image_size)
    return exc.value


def test_defaults_come_from_the_manifest(wf):
    p = wf.validate({"prompt": "a cat"})
    assert (p.num_frames, p.steps, p.cfg_scale, p.fps, p.seed) == (81, 4, 1.0, 16, -1)
    assert (p.width, p.height) == (832, 480)
    assert p.negative_prompt and p.negative_prompt.startswith("色调艳丽")


@pytest.mark.parametrize(
    ("image_size", "expected"),
    [
        ((832, 480), (832, 480)),
        ((480, 832), (480, 832)),
        ((1024, 1024), (624, 624)),
        ((1920, 1080), (848, 480)),
    ],
)
def test_size_follows_image_aspect_at_480p(wf, image_size, expected):
    p = wf.validate({"prompt": "x"}, image_size)
    assert (p.width, p.height) == expected
    assert p.width % 16 == 0 and p.height % 16 == 0


def test_extreme_aspect_is_clamped_to_limits(wf):
    p = wf.validate({"prompt": "x"}, (100, 4000))
    assert (p.width, p.height) == (256, 1280)


def test_given_width_derives_height_from_aspect(wf):
    p = wf.validate({"prompt": "x", "width": 1280}, (1920, 1080))
    assert (p.width, p.height) == (1280, 720)


def test_width_not_multiple_of_16(wf):
    err = _error(wf, {"prompt": "x", "width": 650})
    assert err.field == "width"
    assert str(err).startswith("width: must be a multiple of 16")
    assert "640 or 656" in str(err)


def test_frames_not_4n_plus_1(wf):
    err = _error(wf, {"prompt": "x", "num_frames": 80})
    assert err.field == "num_frames" and "must be 4n+1" in str(err)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("width", 1296),
        ("height", 240),
        ("num_frames", 1),
        ("num_frames", 165),
        ("steps", 1),
        ("steps", 41),
        ("cfg_scale", -0.5),
        ("cfg_scale", 10.5),
        ("fps", 3),
        ("fps", 61),
        ("seed", -2),
        ("seed", 2**53),
    ],
)
def test_out_of_range_names_field(wf, field, value):
    err = _error(wf, {"prompt": "x", field: value})
    assert err.field == field and "must be" in err.reason


def test_prompt_missing(wf):
    assert _error(wf, {}).field == "prompt"


def test_prompt_blank(wf):
    err = _error(wf, {"prompt": "   "})
    assert err.field == "prompt" and "empty" in err.reason


def test_prompt_too_long(wf):
    err = _error(wf, {"prompt": "x" * 2001})
    assert err.field == "prompt" and "too long" in err.reason


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_lone_surrogate_in_text_is_rejected(wf, field):
    # JSON "\\ud800" decodes to a str no UTF-8 encoder takes: POST /prompt would crash after the GPU lease
    assert _error(wf, {"prompt": "x", field: "a cat \ud800"}).field == field


def test_prompt_not_a_string(wf):
    assert _error(wf, {"prompt": 42}).field == "prompt"


def test_unknown_field_rejected(wf):
    err = _error(wf, {"prompt": "x", "sampler": "euler"})
    assert err.field == "sampler" and "unknown field" in err.reason


def test_non_numeric_string_rejected(wf):
    assert _error(wf, {"prompt": "x", "steps": "four"}).field == "steps"


@pytest.mark.parametrize(
    ("field", "value"),
    [("width", "8_32"), ("width", "\uff18\uff13\uff12"), ("cfg_scale", "1_0"), ("seed", "٧")],
)
def test_numeric_strings_python_would_stretch_are_rejected(wf, field, value):
    # int()/float() take digit-group underscores and non-ASCII digits; a request field must not
    assert _error(wf, {"prompt": "x", field: value}).field == field


def test_fractional_int_rejected(wf):
    assert _error(wf, {"prompt": "x", "steps": 4.5}).field == "steps"


def test_bool_is_not_a_number(wf):
    assert _error(wf, {"prompt": "x", "cfg_scale": True}).field == "cfg_scale"


def test_nan_rejected(wf):
    assert _error(wf, {"prompt": "x", "cfg_scale": "nan"}).field == "cfg_scale"


def test_not_a_mapping_rejected(wf):
    assert _error(wf, ["prompt"]).field == "params"


def test_bad_image_size_rejected(wf):
    assert _error(wf, {"prompt": "x"}, (0, 480)).field == "image"


def test_numeric_strings_and_integral_floats_are_coerced(wf):
    p = wf.validate(
        {"prompt": "x", "width": "640", "num_frames": 33.0, "cfg_scale": "2", "seed": "7", "fps": 24}
    )
    assert (p.width, p.num_frames, p.cfg_scale, p.seed, p.fps) == (640, 33, 2.0, 7, 24)
    assert isinstance(p.cfg_scale, float)


def test_null_means_default(wf):
    p = wf.validate({"prompt": "x", "seed": None, "steps": None})
    assert p.seed == -1 and p.steps == 4


def test_random_seed_is_resolved_within_2_pow_53(wf):
    p = wf.validate({"prompt": "x"})
    seeds = {p.with_resolved_seed(random.Random(i)).seed for i in range(20)}
    assert all(0 <= s < 2**53 for s in seeds) and len(seeds) == 20


def test_concrete_seed_is_kept(wf):
    p = wf.validate({"prompt": "x", "seed": 123})
    assert p.with_resolved_seed() is p


def test_normalized_is_stable_for_equal_requests(wf):
    a = wf.validate({"prompt": "x", "cfg_scale": 1, "width": "832"}).normalized()
    b = wf.validate({"prompt": "x", "cfg_scale": 1.0, "width": 832}).normalized()
    assert a == b and list(a) == sorted(a) and isinstance(a["cfg_scale"], float)


def test_params_are_frozen(wf):
    p = wf.validate({"prompt": "x"})
    with pytest.raises(AttributeError):
        p.steps = 8  # type: ignore[misc]
    assert isinstance(p, WorkflowParams)


@pytest.mark.parametrize("seed", [-5, 2**64])
def test_seed_outside_what_any_sampler_takes_is_rejected_even_without_manifest_limits(seed):
    # a user manifest may declare `[params.seed]` without min/max: -5 is not "random" and would reach
    # render() (ValueError, no 4xx); 2**64 is past ComfyUI's noise_seed max and fails only on the GPU
    from app.workflows.params import ParamSpec, validate_params

    specs = {"prompt": ParamSpec("prompt", "string"), "seed": ParamSpec("seed", "int", default=-1)}
    with pytest.raises(ValidationError) as exc:
        validate_params("user_wf", specs, {"prompt": "x", "seed": seed}, None, None)
    assert exc.value.field == "seed"
