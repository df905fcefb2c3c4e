"""`validate_prompt` answers like the real ComfyUI 0.3.64: every captured case, field for field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.comfy.graph_check import validate_prompt
from tests.workflows.conftest import strip_tracebacks

SAMPLES = Path(__file__).parent.parent / "fixtures" / "comfyui" / "samples"
ERROR_CASES = json.loads((SAMPLES / "http_prompt_validation_errors.json").read_text())
WAN_SUBMIT = json.loads((SAMPLES / "wan22_i2v_gguf_submit.json").read_text())


def _json_cases() -> list[str]:
    return [name for name, case in ERROR_CASES.items() if case["response"]["status"] != 500]


@pytest.mark.parametrize("case_name", _json_cases())
def test_captured_prompt_validation_case(case_name, object_info_full):
    case = ERROR_CASES[case_name]
    expected = case["response"]["json"]
    check = validate_prompt(case["request"]["json"].get("prompt"), object_info_full)

    assert check.status_code == case["response"]["status"]
    if check.ok:
        assert strip_tracebacks(check.node_errors) == strip_tracebacks(expected["node_errors"])
        assert check.error is None
    else:
        body = check.response_body("unused", 0)
        assert strip_tracebacks(body) == strip_tracebacks(expected)
    # The JSON shapes must survive a round trip exactly (no tuples, sets or Python-only values).
    assert json.loads(json.dumps(check.node_errors)) == check.node_errors


def test_prompt_that_is_not_an_object_is_the_callers_500(object_info_full):
    assert ERROR_CASES["prompt_not_object"]["response"]["status"] == 500
    with pytest.raises(TypeError):
        validate_prompt(ERROR_CASES["prompt_not_object"]["request"]["json"]["prompt"], object_info_full)


def test_one_bad_branch_keeps_the_good_output(object_info_full):
    prompt = ERROR_CASES["one_bad_branch_one_good_branch"]["request"]["json"]["prompt"]
    check = validate_prompt(prompt, object_info_full)
    assert check.ok and check.outputs == ["2"]
    assert list(check.node_errors) == ["3"]


def test_literals_are_converted_to_declared_types_like_history_shows(object_info_full):
    prompt = ERROR_CASES["int_as_string_number"]["request"]["json"]["prompt"]
    check = validate_prompt(prompt, object_info_full)
    assert check.prompt["1"]["inputs"]["width"] == 64
    assert prompt["1"]["inputs"]["width"] == "64"  # the caller's prompt is not modified


# --- the Wan 2.2 graph and the 17 variants posted to the real server --------------------------------
def _mutate(graph: dict, change: str) -> dict:
    g = copy.deepcopy(graph)
    if change == "vhs_without_format_widgets":
        for key in ("pix_fmt", "crf", "save_metadata", "trim_to_audio"):
            del g["108"]["inputs"][key]
    elif change == "wan_width_not_multiple_of_16":
        g["98"]["inputs"]["width"] = 650
    elif change == "wan_length_not_4n_plus_1":
        g["98"]["inputs"]["length"] = 80
    elif change == "ksampler_add_noise_bool":
        g["86"]["inputs"]["add_noise"] = True
    elif change == "ksampler_bad_sampler":
        g["86"]["inputs"]["sampler_name"] = "euler_a"
    elif change == "unetloader_core_with_gguf_name":
        g["95"] = {"class_type": "UNETLoader", "inputs": {**g["95"]["inputs"], "weight_dtype": "default"}}
    elif change == "lora_strength_as_string":
        g["101"]["inputs"]["strength_model"] = "1.0"
    elif change == "cliploader_bad_type":
        g["84"]["inputs"]["type"] = "umt5"
    elif change == "cliploader_without_optional_device":
        del g["84"]["inputs"]["device"]
    elif change == "link_slot_as_string":
        g["86"]["inputs"]["latent_image"] = ["98", "2"]
    elif change == "link_node_id_as_int":
        g["86"]["inputs"]["latent_image"] = [98, 2]
    elif change == "wrong_output_slot_type":
        g["86"]["inputs"]["latent_image"] = ["98", 0]
    elif change == "gguf_missing_file":
        g["95"]["inputs"]["unet_name"] = "Wan2.2-I2V-A14B-HighNoise-Q8_0.gguf"
    elif change == "loadimage_missing_file":
        g["97"]["inputs"]["image"] = "not_uploaded.png"
    elif change == "widget_given_as_link_to_primitive_int":
        g["200"] = {"class_type": "PrimitiveInt", "inputs": {"value": 81}}
        g["98"]["inputs"]["length"] = ["200", 0]
    elif change == "vhs_unknown_format":
        g["108"]["inputs"]["format"] = "video/mp4"
    elif change == "extra_unknown_input_ignored":
        g["98"]["inputs"]["not_an_input"] = "ignored"
    else:  # pragma: no cover - a new captured variant needs its mutation here
        raise AssertionError(f"no mutation for variant {change}")
    return g


def test_wan_graph_as_posted_is_accepted(template_graph, object_info_wan):
    assert WAN_SUBMIT["submit"]["post_prompt"]["request"]["json"]["prompt"] == template_graph
    check = validate_prompt(template_graph, object_info_wan)
    assert check.status_code == 200 and check.node_errors == {} and check.outputs == ["108"]


@pytest.mark.parametrize("variant", list(WAN_SUBMIT["variants"]))
def test_wan_variant_outcome_matches_real_server(variant, template_graph, object_info_wan):
    captured = WAN_SUBMIT["variants"][variant]
    check = validate_prompt(_mutate(template_graph, captured["changed"]), object_info_wan)

    assert check.status_code == captured["response_status"]
    if captured["response_status"] == 200:
        assert check.node_errors == captured["response"]["node_errors"] == {}
        assert check.outputs == ["108"]
    else:
        expected = captured["response"]
        assert strip_tracebacks(check.response_body("-", 0)) == strip_tracebacks(expected)


# --- rules the captures do not show directly ------------------------------------------------------
def _save_empty_image(width=64) -> dict:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }


def test_link_that_is_not_a_pair_is_bad_linked_input(object_info_full):
    prompt = _save_empty_image()
    prompt["2"]["inputs"]["images"] = ["1", 0, 0]
    check = validate_prompt(prompt, object_info_full)
    error = check.node_errors["2"]["errors"][0]
    assert check.status_code == 400 and error["type"] == "bad_linked_input"
    assert error["extra_info"]["received_value"] == ["1", 0, 0]


def test_widget_wrapped_in_value_object_is_unwrapped(object_info_full):
    prompt = _save_empty_image(width={"__value__": 32})
    check = validate_prompt(prompt, object_info_full)
    assert check.ok and check.prompt["1"]["inputs"]["width"] == 32


def test_cycle_is_reported_not_looped_forever(object_info_full):
    prompt = {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    check = validate_prompt(prompt, object_info_full)
    assert check.status_code == 400
    kinds = {e["type"] for n in check.node_errors.values() for e in n["errors"]}
    assert kinds == {"exception_during_inner_validation"}


def test_partial_execution_targets_limit_the_outputs(object_info_full):
    prompt = ERROR_CASES["one_bad_branch_one_good_branch"]["request"]["json"]["prompt"]
    check = validate_prompt(prompt, object_info_full, partial_execution_targets=["4"])
    assert check.status_code == 400 and check.outputs == []
    assert check.error["type"] == "prompt_outputs_failed_validation"


def test_node_without_inputs_is_exception_during_validation(object_info_full):
    prompt = _save_empty_image()
    del prompt["2"]["inputs"]
    check = validate_prompt(prompt, object_info_full)
    error = check.node_errors["2"]["errors"][0]
    assert error["type"] == "exception_during_validation" and error["details"] == "'inputs'"


def test_file_exists_hook_decides_loadimage(object_info_full):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "sub/uploaded.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    assert validate_prompt(prompt, object_info_full).status_code == 400
    check = validate_prompt(prompt, object_info_full, file_exists=lambda ct, v: v == "sub/uploaded.png")
    assert check.ok and check.node_errors == {}


def test_inputs_that_are_not_an_object_are_exception_during_validation(object_info_full):
    prompt = _save_empty_image()
    prompt["2"]["inputs"] = 5
    check = validate_prompt(prompt, object_info_full)
    error = check.node_errors["2"]["errors"][0]
    assert check.status_code == 400 and error["type"] == "exception_during_validation"
    assert error["extra_info"]["exception_type"] == "TypeError"
