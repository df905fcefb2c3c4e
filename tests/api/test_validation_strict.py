"""The request body takes JSON types as documented: a boolean or a string is not a number."""

from __future__ import annotations

import pytest

from app.api.schemas import GenerateVideoRequest


@pytest.mark.parametrize(
    ("field", "value"),
    [("cfg_scale", True), ("num_frames", "81"), ("steps", 4.0), ("seed", False), ("fps", "16")],
)
def test_loosely_typed_number_is_refused_naming_the_field(field, value):
    with pytest.raises(Exception) as exc:
        GenerateVideoRequest(prompt="p", image_base64="x", **{field: value})
    assert field in str(exc.value)


def test_integers_are_fine_for_float_fields():
    body = GenerateVideoRequest(prompt="p", image_base64="x", cfg_scale=1, wait=30)
    assert body.cfg_scale == 1.0 and body.wait == 30
